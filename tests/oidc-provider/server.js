// A real OpenID provider for Portcullis' openid-connect integration tests.
//
// Runs oidc-provider (the certified Node implementation, unmodified) on 127.0.0.1 with:
//   - discovery, JWKS (RS256 signing key from --key PEM, kid from --kid), introspection,
//     client_credentials, authorization_code with PKCE, refresh_token, RP-initiated logout;
//   - JWT access tokens for the resource `urn:api` (the default resource) and opaque access
//     tokens for `urn:opaque` (so introspection has something to introspect);
//   - devInteractions: the provider's own login and consent pages (any login name is accepted
//     by devInteractions; the account's claims come from ACCOUNTS below);
//   - a `password` grant: oidc-provider has no password grant, so a minimal handler is
//     registered with the provider's own registerGrantType API. It checks the user table
//     below and issues a real JWT access token through the provider's AccessToken model.
//
// Usage: node server.js --port P --key key.pem [--kid K] [--redirect-uri URI]...
//        [--post-logout-redirect-uri URI]... [--access-ttl SECONDS]
// Prints `READY <issuer>` on stdout once listening.

import crypto from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.OIDC_PORT || '0' },
    key: { type: 'string' },
    kid: { type: 'string', default: 'test-key-1' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    'post-logout-redirect-uri': { type: 'string', multiple: true, default: [] },
    'access-ttl': { type: 'string', default: '300' },
  },
});

const port = Number(args.port);
if (!Number.isInteger(port) || port <= 0) {
  console.error('--port (or OIDC_PORT) must be a port number');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const accessTtl = Number(args['access-ttl']);

let signingKey;
if (args.key) {
  signingKey = crypto.createPrivateKey(fs.readFileSync(args.key)).export({ format: 'jwk' });
} else {
  signingKey = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
}
signingKey.kid = args.kid;
signingKey.use = 'sig';
signingKey.alg = 'RS256';

// Users: the password grant checks these; the claims are served for any login.
const ACCOUNTS = {
  alice: { password: 'alice-password', groups: ['admins', 'staff'], roles: ['editor'] },
  bob: { password: 'bob-password', groups: ['staff'], roles: [] },
};

const API = 'urn:api';
const OPAQUE = 'urn:opaque';
const RESOURCES = {
  [API]: { scope: 'api:read api:write', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } },
  [OPAQUE]: { scope: 'api:read api:write', accessTokenFormat: 'opaque' },
};

const clients = [
  {
    // The gateway: confidential client for every flow it drives.
    client_id: 'gateway',
    client_secret: 'gateway-secret',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials', 'password'],
    response_types: ['code'],
    redirect_uris: args['redirect-uri'].length ? args['redirect-uri'] : ['http://localhost/unused'],
    post_logout_redirect_uris: args['post-logout-redirect-uri'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'openid profile email offline_access api:read api:write',
  },
  {
    // A machine client with no api:write, for scope checks.
    client_id: 'reader',
    client_secret: 'reader-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api:read',
  },
];

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'api:read', 'api:write'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'groups', 'roles'],
    email: ['email'],
  },
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id] || { groups: [], roles: [] };
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          email: `${id}@example.test`,
          groups: account.groups,
          roles: account.roles,
        };
      },
    };
  },
  // Groups and roles travel in the JWT access token too (Kong's groups_claim / roles_claim).
  async extraTokenClaims(ctx, token) {
    const account = token.accountId && ACCOUNTS[token.accountId];
    if (!account) return undefined;
    return { groups: account.groups, roles: account.roles, preferred_username: token.accountId };
  },
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    IdToken: 3600,
    RefreshToken: 86400,
  },
  features: {
    devInteractions: { enabled: true },
    introspection: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (ctx, client, oneOf) => oneOf || API,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, resource) => {
        const info = RESOURCES[resource];
        if (!info) throw new errors.InvalidTarget();
        return { ...info, audience: resource, accessTokenTTL: accessTtl };
      },
    },
  },
});
provider.proxy = false;

// Password grant (RFC 6749 §4.3), registered through the provider's own extension API.
provider.registerGrantType(
  'password',
  async (ctx) => {
    const { client, params } = ctx.oidc;
    const account = ACCOUNTS[params.username];
    const supplied = Buffer.from(String(params.password || ''));
    const expected = Buffer.from(account ? account.password : 'x'.repeat(supplied.length || 1));
    if (!account || supplied.length !== expected.length || !crypto.timingSafeEqual(supplied, expected)) {
      throw new errors.InvalidGrant('invalid resource owner credentials');
    }
    const requested = String(params.scope || '').split(' ').filter(Boolean);
    const allowed = new Set(RESOURCES[API].scope.split(' '));
    const scope = requested.filter((s) => allowed.has(s)).join(' ');
    const grant = new provider.Grant({ clientId: client.clientId, accountId: params.username });
    if (scope) grant.addResourceScope(API, scope);
    const grantId = await grant.save();
    const token = new provider.AccessToken({
      accountId: params.username,
      client,
      grantId,
      gty: 'password',
      scope: scope || undefined,
    });
    token.resourceServer = new provider.ResourceServer(API, {
      ...RESOURCES[API],
      audience: API,
      accessTokenTTL: accessTtl,
    });
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();
    ctx.body = {
      access_token: value,
      expires_in: token.expiration,
      token_type: 'Bearer',
      scope: scope || undefined,
    };
  },
  ['username', 'password', 'scope'],
);

provider.on('server_error', (ctx, err) => console.error('server_error', err));

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
