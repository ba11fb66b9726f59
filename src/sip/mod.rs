//! SIP message handling for a stateless proxy: scanning, Via/branch, replies, forwarding.
