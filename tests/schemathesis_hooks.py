"""Loaded by every schemathesis run (tests.support.fuzz_api, SCHEMATHESIS_HOOKS): how to make
the bodies of media types schemathesis cannot make itself.

Photos (`POST /conversations/{key}/photos`, image/jpeg and image/png): random bytes, some
starting with the right magic numbers, so the run reaches the route's checks past the header.
"""

from __future__ import annotations

import schemathesis
from hypothesis import strategies as st

for _media_type, _magic in (("image/jpeg", b"\xff\xd8\xff"), ("image/png", b"\x89PNG\r\n\x1a\n")):
    schemathesis.openapi.media_type(
        _media_type,
        st.one_of(st.binary(max_size=256), st.binary(max_size=256).map(_magic.__add__)),
    )
