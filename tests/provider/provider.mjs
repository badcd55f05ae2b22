// A real OpenID Provider for the client-side tests (tests/login.rs):
// oidc-provider (certified) with the device authorization grant, the
// authorization code flow with PKCE, refresh tokens, client credentials,
// revocation and resource indicators. Access tokens for the resource
// "urn:nats" are RS256 JWTs (typ at+jwt) with audience "urn:nats" and a
// "roles" claim. Logins and consent are oidc-provider's devInteractions
// forms (any login name, any password), driven over HTTP by the tests.
//
// usage: node provider.mjs PORT [no-revocation] [tls CERT_PEM KEY_PEM]
// ("no-revocation": the provider offers no RFC 7009 revocation endpoint;
// "tls": HTTPS with that certificate, which must name 127.0.0.1)
// Prints "listening http(s)://127.0.0.1:PORT" once it answers, and one line
// "grant.error <error>" / "grant.success <grant_type>" per token request.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const options = process.argv.slice(3);
const revocation = !options.includes('no-revocation');
const tlsAt = options.indexOf('tls');
const tls = tlsAt < 0 ? null : { cert: options[tlsAt + 1], key: options[tlsAt + 2] };
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
const RESOURCE = 'urn:nats';

// Roles by login name (the account id); everyone else is a reader.
const ROLES = { ana: ['admin'], wes: ['writer'] };

// Short lifetimes for the clients whose tests wait for an expiry: 6 s
// access tokens for "*-short", 3 s device codes for "nats-stale".
const accessTokenTtl = (clientId) => (clientId?.endsWith('-short') ? 6 : 300);
const deviceCodeTtl = (clientId) => (clientId === 'nats-stale' ? 3 : 600);

const nativeClient = (clientId) => ({
  client_id: clientId,
  application_type: 'native',
  token_endpoint_auth_method: 'none',
  grant_types: [
    'urn:ietf:params:oauth:grant-type:device_code',
    'authorization_code',
    'refresh_token',
  ],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/callback'],
});

const configuration = {
  clients: [
    nativeClient('nats-cli'),
    nativeClient('nats-short'),
    nativeClient('nats-stale'),
    {
      // A confidential client: device flow with a secret.
      client_id: 'nats-confidential',
      client_secret: 'confidential-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
      response_types: [],
      redirect_uris: [],
    },
    {
      // One client id for a person's login and a machine's client
      // credentials: their cached tokens must never answer for each other.
      client_id: 'nats-both',
      client_secret: 'both-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [
        'urn:ietf:params:oauth:grant-type:device_code',
        'refresh_token',
        'client_credentials',
      ],
      response_types: [],
      redirect_uris: [],
    },
    ...['nats-machine', 'nats-machine-short'].map((clientId) => ({
      // Machines: client credentials only.
      client_id: clientId,
      client_secret: 'machine-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
    })),
  ],
  cookies: { keys: ['test-cookie-key-not-a-secret'] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'nats'],
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, preferred_username: id }),
  }),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: revocation },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => {
        if (resource !== RESOURCE) {
          throw new errors.InvalidTarget(`unknown resource ${resource}`);
        }
        return {
          scope: 'nats',
          audience: RESOURCE,
          accessTokenTTL: accessTokenTtl(client.clientId),
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // Refresh tokens for every client allowed the grant (without asking for
  // offline_access, as many providers do for native apps).
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  extraTokenClaims: async (_ctx, token) => {
    if (token.kind === 'ClientCredentials') {
      return { roles: ['writer'] };
    }
    return { roles: ROLES[token.accountId] ?? ['reader'] };
  },
  ttl: {
    DeviceCode: (_ctx, token, client) => deviceCodeTtl(client?.clientId ?? token.clientId),
    AccessToken: (_ctx, token, client) => accessTokenTtl(client?.clientId ?? token.clientId),
    ClientCredentials: (_ctx, token, client) => accessTokenTtl(client?.clientId ?? token.clientId),
    RefreshToken: 3600,
    Grant: 3600,
    Session: 3600,
    Interaction: 600,
    IdToken: 300,
  },
};

const { errors } = Provider;
const provider = new Provider(issuer, configuration);
provider.on('grant.error', (_ctx, err) => console.log(`grant.error ${err.error}`));
provider.on('grant.success', (ctx) => console.log(`grant.success ${ctx.oidc.params.grant_type}`));
provider.on('server_error', (_ctx, err) => console.log(`server_error ${err}`));

const listening = () => console.log(`listening ${issuer}`);
if (tls) {
  const files = { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
  createServer(files, provider.callback()).listen(port, '127.0.0.1', listening);
} else {
  provider.listen(port, '127.0.0.1', listening);
}
