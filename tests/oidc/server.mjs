// A real OpenID provider for the test suite: panva's certified `oidc-provider`, configured from a
// JSON file that the Python fixture writes (tests/oidc_provider.py). Listens on 127.0.0.1 only.
//
// What the fixture's file holds: {issuer, port, jwks_file, clients: [...], users: [...],
// audience, other_audience, short_lived_client}. Users: {username, password, name, roles?}.
// The login form checks the password; consent is granted at once (the clients are first party).
// Access tokens are JWTs (RFC 9068) for the API's audience, with the user's roles and name
// added, so the agent validates them against this provider's JWKS like any hospital's IdP.
import { generateKeyPairSync, timingSafeEqual, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map(config.users.map((user) => [user.username, user]));

// Two providers started with the same key file sign alike: the wrong-issuer test needs that.
function signingKeys() {
  if (!existsSync(config.jwks_file)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-signing-key', use: 'sig', alg: 'RS256' };
    writeFileSync(config.jwks_file, JSON.stringify({ keys: [jwk] }), { mode: 0o600 });
  }
  return JSON.parse(readFileSync(config.jwks_file, 'utf8'));
}

function profileClaims(user) {
  const claims = { name: user.name, preferred_username: user.username };
  if (user.roles) claims.roles = user.roles;
  return claims;
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: signingKeys(),
  cookies: { keys: ['imaging-agent-test-cookie-key'] },
  pkce: { required: () => true },
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], roles: ['roles'] },
  // Claims of the scopes asked for go into the ID token too (not only to userinfo), as the
  // agent reads the browser user's name and roles from the ID token.
  conformIdTokenClaims: false,
  async findAccount(_ctx, id) {
    const user = users.get(id);
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...profileClaims(user) }; } };
  },
  async extraTokenClaims(ctx, token) {
    const user = token.kind === 'AccessToken' && users.get(token.accountId);
    if (!user) return undefined;
    // auth_time as Keycloak sends it: the signing window counts from the login, not the token
    const authTime = ctx.oidc.entities.AuthorizationCode?.authTime;
    return { ...profileClaims(user), ...(authTime ? { auth_time: authTime } : {}) };
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, client) => (client.clientId === config.other_client ? config.other_audience : config.audience),
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resource, client) => ({
        audience: resource,
        scope: 'api',
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
        accessTokenTTL: client.clientId === config.short_lived_client ? 1 : 600,
      }),
    },
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, IdToken: 600, AuthorizationCode: 60 },
});

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, clientId, error) {
  return `<!doctype html><html><head><title>Sign in</title></head><body>
<h1>Test identity provider</h1><p>Sign in to ${escapeHtml(clientId)}</p>
${error ? `<p id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<label>User name <input name="username" id="username" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>`;
}

function samePassword(given, expected) {
  const digest = (text) => createHash('sha256').update(String(text)).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

async function readForm(req) {
  let body = '';
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt, params } = details;
  if (prompt.name === 'login') {
    if (req.method !== 'POST') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(loginPage(uid, params.client_id, ''));
      return;
    }
    const form = await readForm(req);
    const user = users.get(form.get('username') || '');
    if (!user || !samePassword(form.get('password') || '', user.password)) {
      res.writeHead(401, { 'content-type': 'text/html; charset=utf-8' })
        .end(loginPage(uid, params.client_id, 'Wrong user name or password.'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: user.username } }, { mergeWithLastSubmission: false });
    return;
  }
  // consent: the test clients are first party, so what they ask for is granted
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [resource, scopes] of Object.entries(missing.missingResourceScopes || {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
const server = createServer((req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      console.error(error);
      if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`interaction failed: ${error.message}`);
    });
    return;
  }
  callback(req, res);
});
server.listen(config.port, '127.0.0.1', () => console.log(`oidc-provider ${config.issuer} ready`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
