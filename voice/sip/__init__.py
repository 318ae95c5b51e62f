"""SIP/RTP telephone endpoint of the Linli hotline, on asyncio with no third-party packages.

    from voice.sip import Call, SipEndpoint

    async def on_call(call: Call) -> None: ...

    async with SipEndpoint(on_call, host="0.0.0.0", port=5060) as endpoint:
        await asyncio.Event().wait()

A PBX (Asterisk, FreeSWITCH) or a SIP trunk on the private network routes the community
number to this endpoint over UDP; there is no registration. `admission.py` says who may call
(trusted peers; digest for callers that must prove who they are).
`endpoint.py` lists what of RFC 3261 is implemented; `python -m voice.sip` runs a demo.
"""

from voice.sip.call import Call, CallState, EndReason
from voice.sip.endpoint import SipEndpoint

__all__ = ["Call", "CallState", "EndReason", "SipEndpoint"]
