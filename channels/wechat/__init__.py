"""The WeChat official-account channel (on the conversation gateway at /wechat)."""
