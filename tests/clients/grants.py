"""The role grants of tests/clients.rs, exercised with nats-py.

Usage: grants.py <nats-url> <ws-url>, with the tokens in the environment
(TOKEN_<ROLE>) and, for an operator-mode server, the sentinel credentials
in SENTINEL_CREDS. The streams, consumers and buckets
exist already. Every client sets its private inbox prefix ({{inbox}}),
computed from its token as the README says.
Prints one "PASS <case>" or "FAIL <case>: <why>" line per case and exits
non-zero when any case failed.
"""

import asyncio
import base64
import hashlib
import json
import os
import sys

import nats
from nats.errors import NoServersError

URL, WS_URL = sys.argv[1], sys.argv[2]
API = "$JS.API"
FAILED = []


def inbox_prefix(token):
    """The private inbox of the token's user: _INBOX. and the first 32 hex
    digits of SHA-256(iss "\\n" sub)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    digest = hashlib.sha256(f"{claims['iss']}\n{claims['sub']}".encode()).hexdigest()
    return "_INBOX." + digest[:32]


def report(case, ok, why=""):
    if ok:
        print(f"PASS {case}", flush=True)
    else:
        FAILED.append(case)
        print(f"FAIL {case}: {why}", flush=True)


class Client:
    """A connection with a role's token, and the server errors it was told."""

    def __init__(self):
        self.errors = []
        self.nc = None

    async def connect(self, role, url=URL):
        async def on_error(e):
            self.errors.append(str(e).lower())

        token = os.environ[f"TOKEN_{role.upper().replace('-', '_')}"]
        self.inbox = inbox_prefix(token)
        options = dict(
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=5,
            max_reconnect_attempts=0,
            inbox_prefix=self.inbox.encode(),
        )
        if os.environ.get("SENTINEL_CREDS"):
            # With credentials nats-py sends a token, never a password,
            # next to the JWT; the callout reads either.
            options.update(user_credentials=os.environ["SENTINEL_CREDS"], token=token)
        else:
            options.update(user="anyone", password=token)
        self.nc = await nats.connect(url, **options)
        self.js = self.nc.jetstream(timeout=1.5)
        return self

    async def denied(self, case, attempt, subject, what="publish to"):
        """`attempt` fails, because the server refused a publish on `subject`."""
        try:
            await attempt
        except Exception:
            pass
        else:
            report(case, False, "allowed")
            return
        needle = f'permissions violation for {what} "{subject.lower()}"'
        for _ in range(50):
            if any(needle in e for e in self.errors):
                report(case, True)
                return
            await asyncio.sleep(0.05)
        report(case, False, f"no {needle!r}; errors: {self.errors}")

    async def close(self):
        await self.nc.close()


async def allowed(case, attempt, check=lambda _: True):
    try:
        value = await attempt
    except Exception as e:  # noqa: BLE001 - any failure is the case failing
        report(case, False, f"{type(e).__name__}: {e}")
        return None
    ok = check(value)
    report(case, ok, f"unexpected result {value!r}")
    return value


async def consume():
    c = await Client().connect("worker")
    sub = await c.js.pull_subscribe_bind("worker", stream="ORDERS")
    msgs = await allowed("consume: fetch its durable", sub.fetch(2, timeout=3), lambda m: len(m) == 2)
    for m in msgs or []:
        await allowed("consume: ack", m.ack_sync(timeout=3))
    other = await c.js.pull_subscribe_bind("other", stream="ORDERS")
    await c.denied("consume: fetch another durable", other.fetch(1, timeout=1.5), f"{API}.CONSUMER.MSG.NEXT.ORDERS.other")
    await c.denied("consume: delete the stream", c.js.delete_stream("ORDERS"), f"{API}.STREAM.DELETE.ORDERS")
    await c.close()


async def read():
    c = await Client().connect("reader")
    await allowed("read: stream info", c.js.stream_info("ORDERS"), lambda i: i.state.messages == 2)
    await allowed("read: get by sequence", c.js.get_msg("ORDERS", seq=1), lambda m: m.data == b"first")
    await allowed("read: direct get", c.js.get_msg("ORDERS", seq=2, direct=True), lambda m: m.data == b"second")
    await allowed(
        "read: direct get, last by subject",
        c.js.get_last_msg("ORDERS", "orders.new", direct=True),
        lambda m: m.data == b"first",
    )
    await c.denied("read: purge", c.js.purge_stream("ORDERS"), f"{API}.STREAM.PURGE.ORDERS")
    await c.close()


async def replay():
    c = await Client().connect("replayer")
    got = []
    done = asyncio.Event()

    async def on_msg(m):
        got.append(m.data)
        if len(got) == 2:
            done.set()

    sub = await allowed(
        "replay: ordered push consumer",
        c.js.subscribe("orders.>", stream="ORDERS", ordered_consumer=True, cb=on_msg),
    )
    if sub is not None:
        try:
            await asyncio.wait_for(done.wait(), 5)
            report("replay: ordered consumer delivers", got == [b"first", b"second"], repr(got))
        except asyncio.TimeoutError:
            report("replay: ordered consumer delivers", False, f"got {got}")
    pull = await allowed("replay: ephemeral pull consumer", c.js.pull_subscribe("orders.>", stream="ORDERS"))
    if pull is not None:
        await allowed("replay: pull from it", pull.fetch(2, timeout=3), lambda m: len(m) == 2)
    await c.denied("replay: purge", c.js.purge_stream("ORDERS"), f"{API}.STREAM.PURGE.ORDERS")
    await c.close()


async def manage():
    c = await Client().connect("ops")
    await allowed("manage: create its stream", c.js.add_stream(name="SCRATCH", subjects=["scratch.>"]))
    await allowed("manage: create a consumer", c.js.add_consumer("SCRATCH", durable_name="tmp"))
    await allowed("manage: delete the consumer", c.js.delete_consumer("SCRATCH", "tmp"))
    await allowed("manage: delete its stream", c.js.delete_stream("SCRATCH"))
    await c.denied(
        "manage: create another stream",
        c.js.add_stream(name="OTHER", subjects=["other.>"]),
        f"{API}.STREAM.CREATE.OTHER",
    )
    await c.denied("manage: delete another stream", c.js.delete_stream("ORDERS"), f"{API}.STREAM.DELETE.ORDERS")
    await c.close()


async def kv():
    c = await Client().connect("profile")
    config = await allowed("kv: open a readable bucket", c.js.key_value("config"))
    if config is not None:
        await allowed("kv: get", config.get("theme"), lambda e: e.value == b"dark")
        await allowed("kv: keys", config.keys(), lambda k: k == ["theme"])
        await allowed("kv: history", config.history("theme"), lambda h: len(h) == 1)
        watcher = await allowed("kv: watch", config.watch("theme"))
        if watcher is not None:
            await allowed("kv: the watch sees the value", watcher.updates(timeout=3), lambda e: e.value == b"dark")
            await watcher.stop()
        await c.denied("kv: write a read-only bucket", config.put("theme", b"mine"), "$KV.config.theme")
    profiles = await allowed("kv: open a bucket of some keys", c.js.key_value("profiles"))
    if profiles is not None:
        await allowed("kv: put its own key", profiles.put("ana.email", b"ana@example.com"))
        await allowed("kv: get its own key", profiles.get("ana.email"), lambda e: e.value == b"ana@example.com")
        await allowed("kv: delete its own key", profiles.delete("ana.email"))
        await c.denied("kv: put another's key", profiles.put("bob.email", b"hijacked"), "$KV.profiles.bob.email")
        await c.denied(
            "kv: get another's key",
            profiles.get("bob.email"),
            f"{API}.DIRECT.GET.KV_profiles.$KV.profiles.bob.email",
        )
        await c.denied(
            "kv: keys of a bucket it may read only some keys of",
            profiles.keys(),
            f"{API}.CONSUMER.CREATE.KV_profiles",
        )
    await c.close()


async def resp():
    service = await Client().connect("service")
    requester = await Client().connect("requester")

    async def answer(m):
        await m.respond(b"pong")
        await m.respond(b"again")

    await service.nc.subscribe("svc.echo", cb=answer)
    await service.nc.flush()

    async def request():
        # nats-py's flush can write its PING before the SUB it follows (seen
        # in a server trace), so the subscription may land a moment after
        # flush returns: "no responders" then only means "not yet".
        for _ in range(20):
            try:
                return await requester.nc.request("svc.echo", b"ping", timeout=3)
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.1)
        return await requester.nc.request("svc.echo", b"ping", timeout=3)

    await allowed("resp: the request is answered", request(), lambda m: m.data == b"pong")
    for _ in range(50):
        if any("permissions violation for publish to \"_inbox." in e for e in service.errors):
            break
        await asyncio.sleep(0.05)
    report("resp: a second answer is refused", any("permissions violation for publish" in e for e in service.errors), repr(service.errors))
    await service.denied("resp: no other inbox", service.nc.request("_INBOX.forged", b"x", timeout=1), "_INBOX.forged")
    # Another user of the same role cannot read the requester's replies.
    other = await Client().connect("requester2")
    await other.denied(
        "inbox: another user cannot subscribe to mine",
        subscribe_and_wait(other, requester.inbox + ".>"),
        requester.inbox + ".>",
        "subscription to",
    )
    await allowed("inbox: its own answers still come", request(), lambda m: m.data == b"pong")
    await other.close()
    await service.close()
    await requester.close()


async def subscribe_and_wait(client, subject):
    """Subscribes and fails when the server refuses the subscription."""
    await client.nc.subscribe(subject)
    await client.nc.flush()
    for _ in range(40):
        if client.errors:
            raise RuntimeError(client.errors[-1])
        await asyncio.sleep(0.05)


async def websocket():
    try:
        c = await Client().connect("browser", URL)
    except (NoServersError, nats.errors.Error, OSError) as e:
        report("websocket: a websocket-only role is refused over TCP", "authorization" in str(e).lower() or isinstance(e, NoServersError), repr(e))
    else:
        await c.close()
        report("websocket: a websocket-only role is refused over TCP", False, "admitted")
    c = await allowed("websocket: admitted over websocket", Client().connect("browser", WS_URL))
    if c is not None:
        await allowed("websocket: publish", c.nc.publish("web.hello", b"hi"))
        await c.close()


async def main():
    for case in (consume, read, replay, manage, kv, resp, websocket):
        try:
            await case()
        except Exception as e:  # noqa: BLE001 - report, run the rest
            report(case.__name__, False, f"{type(e).__name__}: {e}")
    sys.exit(1 if FAILED else 0)


asyncio.run(main())
