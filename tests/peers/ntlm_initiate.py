#!/usr/bin/env python3
"""pyspnego as the NTLM initiator against coexistd's acceptor (the lab's pools).

Reads JSON cases on standard input: a user, domain and password, the CHALLENGE message
coexistd's acceptor issued, and data to sign. For each case pyspnego's NTLM client
answers the CHALLENGE (its own NEGOTIATE is discarded: MS-SIPAE runs NTLM without one)
and signs the data both ways in datagram mode (MS-NLMP 3.4.3: the RC4 handle re-keyed
with MD5(SealingKey || SeqNum) per message, around pyspnego's sign()). Prints one JSON
object per case: the AUTHENTICATE message and both signatures, for coexistd to verify.
"""
import hashlib
import json
import sys

import spnego
from spnego._ntlm_raw.crypto import rc4init, sealkey, signkey
from spnego._ntlm_raw.messages import Authenticate
from spnego._ntlm_raw.security import sign


def run(case):
    name = f"{case['domain']}\\{case['user']}" if case["domain"] else case["user"]
    client = spnego.client(name, case["password"], protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    client.step()
    authenticate = client.step(bytes.fromhex(case["challenge"]))
    flags = Authenticate.unpack(authenticate).flags
    seq = case["seq"]
    data = bytes.fromhex(case["data"])
    out = {"authenticate": authenticate.hex()}
    for usage, key in (("initiate", "client_signature"), ("accept", "server_signature")):
        handle = rc4init(hashlib.md5(sealkey(flags, client.session_key, usage) + seq.to_bytes(4, "little")).digest())
        out[key] = sign(flags, handle, signkey(flags, client.session_key, usage), seq, data).hex()
    return out


print(json.dumps([run(c) for c in json.load(sys.stdin)]))
