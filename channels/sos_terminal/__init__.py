"""The one-button SOS terminal (Raspberry Pi class): device program and keyboard simulator.

`python -m channels.sos_terminal --simulate` runs it against a running API with mock pins and
the keyboard as the button; `--control-port 8095` runs it headless (make run, scripts) with curl
as the button. See README.md in this folder for the wiring, the signing scheme and what the
server does.
"""
