"""A long-running nats-py program that outlives its tokens: it answers every
request on a subject with the request's own data, and logs in with the token
a file holds at each connect.

Usage: reconnect.py <nats-url> <token-file> <subject> [<sentinel-creds>]
(the creds only for an operator-mode server). Something else keeps the file
fresh: kubelet for a projected service-account token, or a sidecar running
`nats-oidc-callout token > t.new && mv t.new token` every minute.

When the token expires, nats-server sends -ERR 'User Authentication
Expired' and closes the connection. nats-py 2.16 then closes the client for
good: its Client._process_err closes on every -ERR but a stale connection
or a permissions violation, whatever allow_reconnect and
max_reconnect_attempts say, and drops the subscriptions. So this program
makes a new client, and its subscriptions again, each time one is closed.
Lost in between (usually milliseconds): messages sent to the subject before
the new subscription is in place, and those the old client had received but
not yet handed to the callback. Publishing on a closed client raises
ConnectionClosedError.

Tested by tests/clients.rs, nats_py_reconnect_recipe_outlives_its_tokens.
"""

import asyncio
import base64
import hashlib
import json
import sys

import nats

URL, TOKEN_FILE, SUBJECT = sys.argv[1:4]
CREDS = sys.argv[4] if len(sys.argv) > 4 else None


def read_token():
    """The token in the file now: nats-py calls this at every connect."""
    with open(TOKEN_FILE) as f:
        return f.read().strip()


def inbox_prefix(token):
    """The user's private inbox (the book, docs/src/clients/private-inboxes.md)."""
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return "_INBOX." + hashlib.sha256(f"{claims['iss']}\n{claims['sub']}".encode()).hexdigest()[:32]


async def answer(msg):
    await msg.respond(msg.data)


async def on_error(e):
    print(f"error: {e}", flush=True)  # e.g. a connect refused: the file is not fresh yet


async def main():
    auth = dict(user="oidc", password=read_token)
    if CREDS:
        # With creds, nats-py sends a token (never a password) beside the JWT.
        auth = dict(user_credentials=CREDS, token=read_token)
    inbox = inbox_prefix(read_token()).encode()
    while True:
        closed = asyncio.Event()

        async def on_closed():
            closed.set()

        # max_reconnect_attempts=-1: the first connect, and reconnects after
        # a network error, are retried until admitted (every 2 s), reading
        # the file again each time.
        nc = await nats.connect(
            URL,
            **auth,
            inbox_prefix=inbox,
            max_reconnect_attempts=-1,
            error_cb=on_error,
            closed_cb=on_closed,
        )
        try:
            await nc.subscribe(SUBJECT, cb=answer)
        except nats.errors.ConnectionClosedError:
            continue  # expired already: the next token
        print("connected", flush=True)
        await closed.wait()
        print(f"closed ({nc.last_error}), connecting again", flush=True)


asyncio.run(main())
