"""The one-button SOS terminal (Raspberry Pi class): device program and keyboard simulator.

`python -m channels.sos_terminal --simulate` runs it against a running API with mock pins;
see README.md in this folder for the wiring, the signing scheme and what the server does.
"""
