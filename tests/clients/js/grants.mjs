// The role grants of tests/clients.rs, exercised with nats.js
// (@nats-io/transport-node, @nats-io/jetstream, @nats-io/kv; versions pinned
// by package-lock.json next to this file).
//
// Usage: node grants.mjs <nats-url> <ws-url>, with the tokens in the
// environment (TOKEN_<ROLE>, TOKEN_REQUESTER2) and, for an operator-mode
// server, the sentinel credentials in SENTINEL_CREDS. The
// streams, consumers and buckets exist already. Every client sets its
// private inbox prefix ({{inbox}}), computed from its token as the README
// says.
// Prints one "PASS <case>" or "FAIL <case>: <why>" line per case and exits
// non-zero when any case failed.
//
// How nats.js 3 reports a server's `-ERR 'Permissions Violation for Publish
// to "X"'`: it parses it into a PermissionViolationError (`operation`
// "publish" or "subscription", `subject` X), pushes `{ type: "error", error }`
// to every `nc.status()` iterator, rejects a pending request whose subject
// is X with it and closes a subscription on X with it. A denied case here
// asserts the status event naming the exact subject (the server's own
// text), and that the call failed where nats.js can tell.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { inspect } from "node:util";

import { connect, credsAuthenticator, errors } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";

const [URL, WS_URL] = process.argv.slice(2);
const API = "$JS.API";
/** The per-operation timeout of requests (milliseconds). */
const TIMEOUT = 3000;
const FAILED = [];

/** The private inbox of the token's user: _INBOX. and the first 32 hex
 * digits of SHA-256(iss "\n" sub). */
function inboxPrefix(token) {
  const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
  const digest = createHash("sha256").update(`${claims.iss}\n${claims.sub}`).digest("hex");
  return "_INBOX." + digest.slice(0, 32);
}

function report(testCase, ok, why = "") {
  if (ok) {
    console.log(`PASS ${testCase}`);
  } else {
    FAILED.push(testCase);
    console.log(`FAIL ${testCase}: ${why}`);
  }
}

function describe(e) {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** A value for a FAIL line (nats.js objects are circular). */
const show = (v) => inspect(v, { depth: 1, breakLength: Infinity });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A connection with a role's token, and the server errors it was told. */
class Client {
  constructor() {
    this.errors = [];
  }

  async connect(role, url = URL) {
    const token = process.env[`TOKEN_${role.toUpperCase().replaceAll("-", "_")}`];
    this.inbox = inboxPrefix(token);
    const options = {
      servers: url,
      user: "anyone",
      pass: token,
      inboxPrefix: this.inbox,
      reconnect: false,
      timeout: 5000,
    };
    if (process.env.SENTINEL_CREDS) {
      // nats.js sends the creds' JWT, nkey and signature next to user and
      // pass (the token): the nkey is the sentinel's, which nats-server
      // checked, and the service decides by the token.
      options.authenticator = credsAuthenticator(readFileSync(process.env.SENTINEL_CREDS));
    }
    this.nc = await connect(options);
    (async () => {
      for await (const s of this.nc.status()) {
        if (s.type === "error") {
          this.errors.push(s.error);
        }
      }
    })().catch(() => {});
    const opts = { apiPrefix: API, timeout: TIMEOUT, checkAPI: false };
    this.js = jetstream(this.nc, opts);
    // checkAPI: false, or jetstreamManager asks for account info first
    // ({api}.INFO), which no grant gives.
    this.jsm = await jetstreamManager(this.nc, opts);
    return this;
  }

  /** The permission errors the server sent, as "<operation> <subject>". */
  violations() {
    return this.errors
      .filter((e) => e instanceof errors.PermissionViolationError)
      .map((e) => `${e.operation} ${e.subject}`);
  }

  /** `attempt` fails because the server refused `what` ("publish" or
   * "subscription") on `subject`: the status event names that subject, in
   * the server's words, and the call failed (for requests: rejected with
   * that PermissionViolationError). */
  async denied(testCase, attempt, subject, what = "publish") {
    let thrown = null;
    try {
      const value = await attempt();
      if (value !== undefined && value !== null && value !== false) {
        report(testCase, false, `allowed: ${show(value)}`);
        return;
      }
    } catch (e) {
      thrown = e;
    }
    if (!this.nc.isClosed()) {
      // The server answers in order: its -ERR comes before the PONG.
      await this.nc.flush();
    }
    const text = `Permissions Violation for ${what === "publish" ? "Publish" : "Subscription"} to "${subject}"`;
    let seen = null;
    for (let i = 0; i < 50 && seen === null; i++) {
      seen =
        this.errors.find(
          (e) =>
            e instanceof errors.PermissionViolationError &&
            e.operation === what &&
            e.subject === subject &&
            e.message.toLowerCase().includes(text.toLowerCase()),
        ) ?? null;
      if (seen === null) {
        await sleep(50);
      }
    }
    if (seen === null) {
      report(testCase, false, `no ${text}; thrown ${describe(thrown)}; errors: ${this.violations()}`);
      return;
    }
    if (
      thrown instanceof errors.PermissionViolationError &&
      (thrown.subject !== subject || thrown.operation !== what)
    ) {
      report(testCase, false, `rejected for another subject: ${describe(thrown)}`);
      return;
    }
    report(testCase, true);
  }

  async close() {
    if (!this.nc.isClosed()) {
      await this.nc.close();
    }
  }
}

async function allowed(testCase, attempt, check = () => true) {
  let value;
  try {
    value = await attempt();
  } catch (e) {
    report(testCase, false, describe(e));
    return null;
  }
  let ok;
  try {
    ok = check(value);
  } catch (e) {
    ok = false;
  }
  report(testCase, ok, `unexpected result ${show(value)}`);
  return ok ? value : null;
}

/** The messages of a fetch (an iterator that ends with the batch). */
async function collect(iter) {
  const out = [];
  for await (const m of iter) {
    out.push(m);
  }
  return out;
}

const text = (m) => new TextDecoder().decode(m.data ?? m.value);

async function consume() {
  const c = await new Client().connect("worker");
  const worker = await allowed("consume: bind its durable", () => c.js.consumers.get("ORDERS", "worker"));
  if (worker !== null) {
    const msgs = await allowed(
      "consume: fetch its durable",
      async () => collect(await worker.fetch({ max_messages: 2, expires: TIMEOUT })),
      (m) => m.length === 2 && text(m[0]) === "first" && text(m[1]) === "second",
    );
    for (const m of msgs ?? []) {
      await allowed("consume: ack", () => m.ackAck({ timeout: TIMEOUT }), (ok) => ok === true);
    }
  }
  // Binding looks the consumer up first: the info request is what nats.js
  // sends, and what is refused.
  await c.denied(
    "consume: fetch another durable",
    () => c.js.consumers.get("ORDERS", "other"),
    `${API}.CONSUMER.INFO.ORDERS.other`,
  );
  // A consumer made from info the client has already skips the lookup: the
  // pull itself is refused (nats.js publishes it, so the fetch only ends
  // empty; the status event tells why).
  const other = c.js.consumers.getConsumerFromInfo({
    stream_name: "ORDERS",
    name: "other",
    config: { durable_name: "other", ack_policy: "explicit" },
  });
  await c.denied(
    "consume: fetch another durable, bound without its info",
    async () => {
      const got = await collect(await other.fetch({ max_messages: 1, expires: 1500 }));
      return got.length > 0 ? got.map(text) : null;
    },
    `${API}.CONSUMER.MSG.NEXT.ORDERS.other`,
  );
  await c.denied("consume: delete the stream", () => c.jsm.streams.delete("ORDERS"), `${API}.STREAM.DELETE.ORDERS`);
  await c.close();
}

async function read() {
  const c = await new Client().connect("reader");
  await allowed("read: stream info", () => c.jsm.streams.info("ORDERS"), (i) => i.state.messages === 2);
  await allowed(
    "read: get by sequence",
    () => c.jsm.streams.getMessage("ORDERS", { seq: 1 }),
    (m) => text(m) === "first",
  );
  await allowed(
    "read: direct get",
    () => c.jsm.direct.getMessage("ORDERS", { seq: 2 }),
    (m) => text(m) === "second",
  );
  await allowed(
    "read: direct get, last by subject",
    () => c.jsm.direct.getMessage("ORDERS", { last_by_subj: "orders.new" }),
    (m) => text(m) === "first",
  );
  await c.denied("read: purge", () => c.jsm.streams.purge("ORDERS"), `${API}.STREAM.PURGE.ORDERS`);
  await c.close();
}

async function replay() {
  const c = await new Client().connect("replayer");
  const ordered = await allowed("replay: ordered consumer", () => c.js.consumers.get("ORDERS"));
  if (ordered !== null) {
    const got = [];
    try {
      const messages = await ordered.consume({ max_messages: 10, expires: TIMEOUT });
      for await (const m of messages) {
        got.push(text(m));
        if (got.length === 2) {
          break;
        }
      }
      report(
        "replay: ordered consumer delivers",
        got.length === 2 && got[0] === "first" && got[1] === "second",
        JSON.stringify(got),
      );
    } catch (e) {
      report("replay: ordered consumer delivers", false, `${describe(e)}; got ${JSON.stringify(got)}`);
    }
  }
  await c.denied("replay: purge", () => c.jsm.streams.purge("ORDERS"), `${API}.STREAM.PURGE.ORDERS`);
  await c.close();
}

async function kv() {
  const c = await new Client().connect("profile");
  const kvm = new Kvm(c.js);
  // open() binds without asking the server; its gets use STREAM.MSG.GET
  // unless told the bucket has direct get.
  const config = await allowed("kv: open a readable bucket", () => kvm.open("config"));
  if (config !== null) {
    await allowed("kv: get", () => config.get("theme"), (e) => e.string() === "dark");
    await allowed(
      "kv: keys",
      async () => {
        const keys = [];
        for await (const k of await config.keys()) {
          keys.push(k);
        }
        return keys;
      },
      (k) => k.length === 1 && k[0] === "theme",
    );
    await allowed(
      "kv: history",
      async () => collect(await config.history({ key: "theme" })),
      (h) => h.length === 1,
    );
    const watch = await allowed("kv: watch", () => config.watch({ key: "theme" }));
    if (watch !== null) {
      await allowed(
        "kv: the watch sees the value",
        async () => {
          for await (const e of watch) {
            return e.string();
          }
          return null;
        },
        (v) => v === "dark",
      );
      watch.stop();
    }
    await c.denied(
      "kv: write a read-only bucket",
      () => config.put("theme", "mine"),
      "$KV.config.theme",
    );
  }
  // A key-pattern read grants direct gets of those keys only: the bucket is
  // opened as having direct get (a plain open() would get through
  // STREAM.MSG.GET, which cannot be scoped to keys).
  const profiles = await allowed("kv: open a bucket of some keys", () =>
    kvm.open("profiles", { allow_direct: true }),
  );
  if (profiles !== null) {
    await allowed("kv: put its own key", () => profiles.put("ana.email", "ana@example.com"), (r) => r > 0);
    await allowed(
      "kv: get its own key",
      () => profiles.get("ana.email"),
      (e) => e.string() === "ana@example.com",
    );
    await allowed("kv: delete its own key", () => profiles.delete("ana.email"));
    await c.denied(
      "kv: put another's key",
      () => profiles.put("bob.email", "hijacked"),
      "$KV.profiles.bob.email",
    );
    await c.denied(
      "kv: get another's key",
      () => profiles.get("bob.email"),
      `${API}.DIRECT.GET.KV_profiles.$KV.profiles.bob.email`,
    );
  }
  await c.close();
}

async function inbox() {
  const service = await new Client().connect("service");
  const requester = await new Client().connect("requester");
  const replyTo = [];
  service.nc.subscribe("svc.echo", {
    callback: (err, m) => {
      if (err === null) {
        replyTo.push(m.reply);
        m.respond("pong");
      }
    },
  });
  await service.nc.flush();

  const request = async () => {
    // Only "not yet" could make this fail once: the subscription is flushed.
    for (let i = 0; ; i++) {
      try {
        return await requester.nc.request("svc.echo", "ping", { timeout: TIMEOUT });
      } catch (e) {
        if (!(e instanceof errors.NoRespondersError) || i >= 20) {
          throw e;
        }
        await sleep(100);
      }
    }
  };

  await allowed(
    "inbox: answers come to the private inbox",
    request,
    (m) => text(m) === "pong" && replyTo.length === 1 && replyTo[0].startsWith(requester.inbox + "."),
  );
  // Another user of the same role cannot read the requester's replies.
  const other = await new Client().connect("requester2");
  await other.denied(
    "inbox: another user cannot subscribe to mine",
    async () => {
      const sub = other.nc.subscribe(requester.inbox + ".>");
      await other.nc.flush();
      // The refusal closes the subscription with the error.
      if (sub.isClosed()) {
        throw await sub.closed;
      }
      return "still subscribed";
    },
    requester.inbox + ".>",
    "subscription",
  );
  await allowed(
    "inbox: its own answers still come",
    request,
    (m) => text(m) === "pong" && replyTo.length === 2 && replyTo[1].startsWith(requester.inbox + "."),
  );
  await other.close();
  await service.close();
  await requester.close();
}

for (const [name, run] of Object.entries({ consume, read, replay, kv, inbox })) {
  try {
    await run();
  } catch (e) {
    report(name, false, describe(e));
  }
}
process.exit(FAILED.length ? 1 : 0);
