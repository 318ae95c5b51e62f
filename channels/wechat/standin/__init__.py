"""A stand-in for WeChat's servers on loopback, speaking the official account's real protocol
(signatures, AES, retries, access tokens, errcodes), for the tests and for `make run`."""
