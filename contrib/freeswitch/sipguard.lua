-- Screen the current call with sipguard's HTTP decision API (see sipguard.xml).
-- Reads the channel variables sipguard_url, sipguard_token, sipguard_timeout,
-- sipguard_fail_closed and sipguard_account; sets sipguard_verdict.
local api = freeswitch.API()

local function json_string(s)
  s = tostring(s or "")
  s = s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

local function var(name)
  return session:getVariable(name)
end

local body = "{" ..
  '"source_ip":' .. json_string(var("network_addr")) ..
  ',"caller":' .. json_string(var("sip_from_uri") and ("sip:" .. var("sip_from_uri")) or var("caller_id_number")) ..
  ',"callee":' .. json_string(var("sip_req_uri") and ("sip:" .. var("sip_req_uri")) or var("destination_number")) ..
  ',"call_id":' .. json_string(var("sip_call_id"))
local account = var("sipguard_account")
if account and account ~= "" then
  body = body .. ',"account":' .. json_string(account)
end
local pai = var("sip_P-Asserted-Identity")
if pai and pai ~= "" then
  body = body .. ',"p_asserted_identity":' .. json_string(pai)
end
local identity = var("sip_h_Identity")
if identity and identity ~= "" then
  body = body .. ',"identity":' .. json_string(identity)
end
body = body .. "}"

local args = var("sipguard_url") ..
  " content-type application/json" ..
  " timeout " .. (var("sipguard_timeout") or "1") ..
  " append_headers 'Authorization: Bearer " .. (var("sipguard_token") or "") .. "'" ..
  " json post " .. body
local reply = api:execute("curl", args)

-- `curl ... json` answers {"status_code": N, "body": "..."}: the body is sipguard's answer.
local status = tonumber(reply and reply:match('"status_code"%s*:%s*"?(%d+)'))
local verdict = reply and reply:match('\\"verdict\\"%s*:%s*\\"([%w_]+)\\"')
if status ~= 200 or not verdict then
  if var("sipguard_fail_closed") == "true" then
    session:execute("set", "sip_rh_Retry-After=30")
    session:execute("respond", "503 Screening Unavailable")
    return
  end
  freeswitch.consoleLog("WARNING", "sipguard unavailable: call sent on unscreened\n")
  session:setVariable("sipguard_verdict", "unscreened")
  return
end
session:setVariable("sipguard_verdict", verdict)
if verdict == "reject" then
  local code = reply:match('\\"code\\"%s*:%s*(%d+)') or "403"
  local reason = reply:match('\\"reason\\"%s*:%s*\\"([^\\"]*)\\"') or "Forbidden"
  local retry = reply:match('\\"Retry%-After\\"%s*:%s*\\"(%d+)\\"')
  if retry then
    session:execute("set", "sip_rh_Retry-After=" .. retry)
  end
  session:execute("respond", code .. " " .. reason)
end
