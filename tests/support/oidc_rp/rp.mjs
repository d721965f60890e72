// The tests' OpenID Connect relying party: panva's openid-client (OpenID Certified), not our code.
//
// Usage: node rp.mjs COMMAND < request.json > answer.json
//
// Every command reads one JSON object on stdin with the client's settings:
//   issuer         the public Issuer Identifier (what discovery must answer and ID tokens carry)
//   reach          the base URL this process can reach the issuer at (requests to `issuer` go there)
//   client_id, client_secret (client_secret_basic)
// and prints one JSON object on stdout. Commands:
//   begin     {redirect_uri, scope, prompt?}              -> {authorization_url, code_verifier, nonce, state, metadata}
//   callback  {callback_url, code_verifier, nonce, state} -> {tokens, claims, userinfo}
//   refresh   {refresh_token}                             -> {tokens, claims}
//   logout    {id_token_hint, post_logout_redirect_uri, state} -> {end_session_url}
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
function reaching(issuer, reach) {
  const from = new URL(issuer).origin;
  const to = new URL(reach).origin;
  return (url, options) => {
    const target = url.startsWith(from) ? to + url.slice(from.length) : url;
    return fetch(target, options);
  };
}

async function configure(request) {
  const config = await client.discovery(
    new URL(request.issuer),
    request.client_id,
    undefined,
    client.ClientSecretBasic(request.client_secret),
    {
      [client.customFetch]: reaching(request.issuer, request.reach),
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
    });
    return { authorization_url: authorization_url.href, code_verifier, nonce, state, metadata: config.serverMetadata() };
  },

  async callback(request) {
    const config = await configure(request);
    const tokens = await client.authorizationCodeGrant(config, new URL(request.callback_url), {
      pkceCodeVerifier: request.code_verifier,
      expectedNonce: request.nonce,
      expectedState: request.state,
      idTokenExpected: true,
    });
    const answer = tokenAnswer(tokens);
    answer.userinfo = await client.fetchUserInfo(config, tokens.access_token, answer.claims.sub);
    return answer;
  },

  async refresh(request) {
    const config = await configure(request);
    return tokenAnswer(await client.refreshTokenGrant(config, request.refresh_token));
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
