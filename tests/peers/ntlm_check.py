#!/usr/bin/env python3
"""Checks coexistd's NTLM client with pyspnego, an NTLM implementation written elsewhere.

Reads JSON cases on standard input. Each case holds what coexistd produced (the
AUTHENTICATE message answering a CHALLENGE, the exported session key it chose, and
message signatures in both directions) and the inputs (user, domain, password). Every
value is recomputed here with pyspnego's primitives alone — its message parser, NTOWFv2,
the NTLMv2 response, RC4K, SIGNKEY/SEALKEY, and its MAC with extended session security —
and compared. The datagram-mode re-keying of MS-NLMP 3.4.3 (RC4 handle from
MD5(SealingKey || SeqNum) per message) is applied around pyspnego's sign(), which does
not implement connectionless mode itself.

Prints one line per case ("ok" or the mismatches) and exits 1 on any mismatch.
"""
import hashlib
import json
import sys

from spnego._ntlm_raw.crypto import compute_response_v2, ntowfv1, ntowfv2, rc4init, rc4k, sealkey, signkey
from spnego._ntlm_raw.messages import Authenticate, Challenge, NegotiateFlags, NTClientChallengeV2
from spnego._ntlm_raw.security import sign


def check(case):
    errors = []
    chal = Challenge.unpack(bytes.fromhex(case["challenge"]))
    auth = Authenticate.unpack(bytes.fromhex(case["authenticate"]))
    if auth.user_name != case["user"]:
        errors.append(f"user {auth.user_name!r}")
    if (auth.domain_name or "") != case["domain"]:
        errors.append(f"domain {auth.domain_name!r}")
    flags = auth.flags
    for name in ("sign", "datagram", "extended_session_security", "key_exch", "identity", "ntlm", "unicode"):
        if not flags & getattr(NegotiateFlags, name):
            errors.append(f"flag {name} not set")
    nt = auth.nt_challenge_response
    blob = NTClientChallengeV2.unpack(nt[16:])
    if blob.av_pairs.pack() != chal.target_info.pack():
        errors.append("the response does not carry the server's target info")
    nt_hash = ntowfv2(case["user"], ntowfv1(case["password"]), case["domain"])
    nt2, _lm, base = compute_response_v2(
        nt_hash, chal.server_challenge, blob.challenge_from_client, blob.time_stamp, blob.av_pairs
    )
    if nt2 != nt:
        errors.append("NtChallengeResponse differs from pyspnego's")
    exported = rc4k(base, auth.encrypted_random_session_key)
    if exported.hex() != case["session_key"]:
        errors.append("the encrypted session key does not decrypt to the exported key")
    for usage, key in (("initiate", "client_signatures"), ("accept", "server_signatures")):
        sign_key = signkey(flags, exported, usage)
        seal_key = sealkey(flags, exported, usage)
        for m in case[key]:
            seq = m["seq"]
            handle = rc4init(hashlib.md5(seal_key + seq.to_bytes(4, "little")).digest())
            want = sign(flags, handle, sign_key, seq, bytes.fromhex(m["data"]))
            if want.hex() != m["signature"]:
                errors.append(f"{usage} signature of seq {seq}: ours {m['signature']}, pyspnego {want.hex()}")
    return errors


def main():
    failed = False
    for i, case in enumerate(json.load(sys.stdin)):
        errors = check(case)
        print(f"case {i}: " + ("ok" if not errors else "; ".join(errors)))
        failed |= bool(errors)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
