// The tests' OpenID Connect relying party: panva's openid-client (OpenID Certified), not our code.
//
// Usage: node rp.mjs COMMAND < request.json > answer.json
//
// Every command reads one JSON object on stdin with the client's settings:
//   issuer         the public Issuer Identifier (what discovery must answer and ID tokens carry)
//   reach          the base URL this process can reach the issuer at (requests to `issuer` go there)
//   client_id, client_secret (client_secret_basic)
//   routes         optional {public origin: reachable origin} for other servers (the APIs)
//   dpop_jwk       optional: the client's DPoP key, a private P-256 JWK; with it the library
//                  proves possession of that key (RFC 9449) at the token endpoint and the APIs
// and prints one JSON object on stdout. Commands:
//   begin     {redirect_uri, scope, prompt?, dpop_jkt?, resource?} -> {authorization_url, code_verifier, nonce, state, metadata}
//   callback  {callback_url, code_verifier, nonce, state} -> {tokens, claims, userinfo}
//                                                            (userinfo null with dpop_jwk)
//   refresh   {refresh_token}                             -> {tokens, claims}
//   logout    {id_token_hint, post_logout_redirect_uri, state} -> {end_session_url}
//   device    {scope?}                                    -> {tokens, claims}
//             the device authorization grant (RFC 8628); the device authorization response's
//             user_code and verification URIs go to stderr as one JSON line, at once, then it polls
//   service   {scope, resource}                           -> {tokens, claims: null, proofs}
//             client credentials; `proofs` are the DPoP proofs sent to the token endpoint (two
//             when it answered use_dpop_nonce and the library retried with its nonce)
//   fetch     {access_token, urls}                        -> {results: [{url, status, error, proof}]}
//             GET each public URL with the token (and a fresh proof with dpop_jwk): the status,
//             the `error` of a 401's challenge, and the last DPoP proof sent (for replays)
// When the library refuses something (a check fails, the server answers an OAuth error), the
// answer is {refused: {name, code, error, error_description, message, reason, claim}} and the
// exit status 3; anything else that goes wrong is a crash (status 1, stack trace on stderr).
import * as client from "openid-client";

async function readRequest() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

// Send requests for the public issuer to where this process can reach it (a container's
// published port, 127.0.0.1 rather than localhost); the library still sees the public URLs.
// Each request's DPoP header is kept in `sent` (the last one is what a test replays).
function reaching(issuer, reach, routes = {}, sent = []) {
  const pairs = [[issuer, reach], ...Object.entries(routes)].map(([from, to]) => [
    new URL(from).origin,
    new URL(to).origin,
  ]);
  return (url, options) => {
    const pair = pairs.find(([from]) => url.startsWith(from));
    const target = pair === undefined ? url : pair[1] + url.slice(pair[0].length);
    const proof = new Headers(options?.headers ?? {}).get("dpop");
    if (proof !== null) sent.push(proof);
    return fetch(target, options);
  };
}

// The DPoP handle of the client's key: the private JWK imported as WebCrypto keys (the public
// half extractable, as the library puts it in each proof's header).
async function dpopHandle(config, jwk) {
  if (jwk === undefined) return undefined;
  const algorithm = { name: "ECDSA", namedCurve: "P-256" };
  const { d, ...publicJwk } = jwk;
  const privateKey = await crypto.subtle.importKey("jwk", { ...publicJwk, d }, algorithm, false, ["sign"]);
  const publicKey = await crypto.subtle.importKey("jwk", publicJwk, algorithm, true, ["verify"]);
  return client.getDPoPHandle(config, { privateKey, publicKey });
}

async function configure(request, sent = []) {
  const config = await client.discovery(
    new URL(request.issuer),
    request.client_id,
    undefined,
    client.ClientSecretBasic(request.client_secret),
    {
      [client.customFetch]: reaching(request.issuer, request.reach, request.routes, sent),
      execute: [client.allowInsecureRequests],
    },
  );
  // Verify ID token signatures from the token endpoint too (over plain HTTP in the tests, TLS
  // cannot stand in for them as OpenID Connect Core 3.1.3.7 allows).
  client.enableNonRepudiationChecks(config);
  return config;
}

function tokenAnswer(tokens) {
  return {
    tokens: {
      access_token: tokens.access_token,
      token_type: tokens.token_type,
      expires_in: tokens.expires_in,
      refresh_token: tokens.refresh_token,
      id_token: tokens.id_token,
      scope: tokens.scope,
    },
    claims: tokens.claims() ?? null,
  };
}

const commands = {
  async begin(request) {
    const config = await configure(request);
    const code_verifier = client.randomPKCECodeVerifier();
    const nonce = client.randomNonce();
    const state = client.randomState();
    const authorization_url = client.buildAuthorizationUrl(config, {
      redirect_uri: request.redirect_uri,
      scope: request.scope,
      code_challenge: await client.calculatePKCECodeChallenge(code_verifier),
      code_challenge_method: "S256",
      nonce,
      state,
      ...(request.prompt === undefined ? {} : { prompt: request.prompt }),
      ...(request.dpop_jkt === undefined ? {} : { dpop_jkt: request.dpop_jkt }),
      ...(request.resource === undefined ? {} : { resource: request.resource }),
    });
    return { authorization_url: authorization_url.href, code_verifier, nonce, state, metadata: config.serverMetadata() };
  },

  async callback(request) {
    const config = await configure(request);
    const DPoP = await dpopHandle(config, request.dpop_jwk);
    const checks = {
      pkceCodeVerifier: request.code_verifier,
      expectedNonce: request.nonce,
      expectedState: request.state,
      idTokenExpected: true,
    };
    const tokens = await client.authorizationCodeGrant(config, new URL(request.callback_url), checks, undefined, {
      DPoP,
    });
    const answer = tokenAnswer(tokens);
    answer.userinfo =
      DPoP === undefined ? await client.fetchUserInfo(config, tokens.access_token, answer.claims.sub) : null;
    return answer;
  },

  async refresh(request) {
    const config = await configure(request);
    const DPoP = await dpopHandle(config, request.dpop_jwk);
    return tokenAnswer(await client.refreshTokenGrant(config, request.refresh_token, undefined, { DPoP }));
  },

  async service(request) {
    const sent = [];
    const config = await configure(request, sent);
    const DPoP = await dpopHandle(config, request.dpop_jwk);
    const parameters = { scope: request.scope, resource: request.resource };
    const answer = tokenAnswer(await client.clientCredentialsGrant(config, parameters, { DPoP }));
    return { ...answer, proofs: sent };
  },

  async fetch(request) {
    const sent = [];
    const config = await configure(request, sent);
    const DPoP = await dpopHandle(config, request.dpop_jwk);
    const results = [];
    for (const url of request.urls) {
      sent.length = 0;
      let status;
      let error = null;
      try {
        const target = new URL(url);
        const response = await client.fetchProtectedResource(config, request.access_token, target, "GET", undefined, undefined, {
          DPoP,
        });
        status = response.status;
        await response.body?.cancel();
      } catch (refused) {
        // The library turns a 401 with a challenge into an error (after one retry for use_dpop_nonce).
        if (!(refused instanceof client.WWWAuthenticateChallengeError)) throw refused;
        status = refused.status;
        error = refused.cause?.[0]?.parameters?.error ?? null;
      }
      results.push({ url, status, error, proof: sent.at(-1) ?? null });
    }
    return { results };
  },

  // RFC 8628: start a device authorization, write what the person needs to stderr at once (one
  // JSON line: the answer on stdout comes only when the device is approved), then poll.
  async device(request) {
    const config = await configure(request);
    const parameters = request.scope === undefined ? {} : { scope: request.scope };
    const started = await client.initiateDeviceAuthorization(config, parameters);
    const { user_code, verification_uri, verification_uri_complete, interval, expires_in } = started;
    process.stderr.write(JSON.stringify({ user_code, verification_uri, verification_uri_complete, interval, expires_in }) + "\n");
    return tokenAnswer(await client.pollDeviceAuthorizationGrant(config, started));
  },

  async logout(request) {
    const config = await configure(request);
    const url = client.buildEndSessionUrl(config, {
      id_token_hint: request.id_token_hint,
      post_logout_redirect_uri: request.post_logout_redirect_uri,
      state: request.state,
    });
    return { end_session_url: url.href };
  },
};

// The library's own refusals: failed checks on what the server sent, and OAuth error answers.
function refusal(error) {
  const refusals = [
    client.ClientError,
    client.ResponseBodyError,
    client.AuthorizationResponseError,
    client.WWWAuthenticateChallengeError,
  ];
  if (!refusals.some((kind) => error instanceof kind)) return null;
  return {
    name: error.name,
    code: error.code ?? null,
    error: error.error ?? null,
    error_description: error.error_description ?? null,
    message: error.message,
    // A failed check: oauth4webapi's own error, naming the claim (`nonce`, `iss`, ...).
    reason: error.cause instanceof Error ? error.cause.message : null,
    claim: error.cause?.cause?.claim ?? null,
  };
}

const command = commands[process.argv[2]];
if (command === undefined) {
  process.stderr.write(`usage: node rp.mjs {${Object.keys(commands).join("|")}} < request.json\n`);
  process.exit(2);
}
try {
  process.stdout.write(JSON.stringify(await command(await readRequest())) + "\n");
} catch (error) {
  const refused = refusal(error);
  if (refused === null) throw error;
  process.stdout.write(JSON.stringify({ refused }) + "\n");
  process.exitCode = 3;
}
