// A long-running nats.js program that outlives its tokens: it answers every
// request on a subject with the request's own data, and logs in with the
// token a file holds at each connect.
//
// Usage: node reconnect.mjs <nats-url> <token-file> <subject> [<sentinel-creds>]
// (the creds only for an operator-mode server), with @nats-io/transport-node
// installed (npm install @nats-io/transport-node; tested with 3.3.1).
// Something else keeps the file fresh: kubelet for a projected
// service-account token, or a sidecar running
// `nats-oidc-callout token > t.new && mv t.new token` every minute.
//
// When the token expires, nats-server sends -ERR 'User Authentication
// Expired' and closes the connection. nats.js 3.3 reconnects, calls
// the authenticator again, and restores the subscriptions. By default it
// gives up for good when that reconnect is refused too (two authentication
// errors in a row: the file was not fresh yet), and after 10 failed attempts
// at a server; the two options below make it keep trying every 2 s instead.
// An authenticator that throws also closes the connection for good, so
// readToken never throws. Lost while disconnected: messages sent to the
// subject meanwhile, and publishes made before the attempt that succeeds
// (each attempt starts from an empty outbound buffer).
//
// Tested by tests/clients.rs, nats_js_reconnect_recipe_outlives_its_tokens.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { connect, credsAuthenticator } from "@nats-io/transport-node";

const [url, tokenFile, subject, creds] = process.argv.slice(2);

/** The token in the file now: nats.js calls this at every connect. */
function readToken() {
  try {
    return readFileSync(tokenFile, "utf8").trim();
  } catch (e) {
    console.log(`cannot read ${tokenFile}: ${e.message}`);
    return ""; // refused, and tried again
  }
}

/** The user's private inbox (the book, docs/src/clients/private-inboxes.md). */
function inboxPrefix(token) {
  const claims = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
  return "_INBOX." + createHash("sha256").update(`${claims.iss}\n${claims.sub}`).digest("hex").slice(0, 32);
}

const byToken = () => ({ user: "oidc", pass: readToken() });
const nc = await connect({
  servers: url,
  authenticator: creds ? [credsAuthenticator(readFileSync(creds)), byToken] : byToken,
  inboxPrefix: inboxPrefix(readToken()),
  maxReconnectAttempts: -1, // never give up on the server
  ignoreAuthErrorAbort: true, // nor after a refused reconnect
});
nc.subscribe(subject, {
  callback: (err, msg) => {
    if (err === null) {
      msg.respond(msg.data);
    }
  },
});
console.log("connected");
(async () => {
  for await (const s of nc.status()) {
    if (s.type === "error" || s.type === "disconnect" || s.type === "reconnect") {
      console.log(s.type, s.error?.message ?? "");
    }
  }
})();
// Nothing above closes it for good; should anything else, say so and exit
// (a supervisor starts it again).
const err = await nc.closed();
console.log(`closed: ${err?.message}`);
process.exit(1);
