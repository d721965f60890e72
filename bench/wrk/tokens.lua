-- Send every request with the next token of a file (one per line), so no token is sent twice.
-- Usage: wrk -t1 ... -s tokens.lua URL -- TOKENS_FILE           GET the URL's path as `Bearer TOKEN`
--        wrk -t1 ... -s tokens.lua URL -- TOKENS_FILE refresh   POST /token with the refresh grant
--        wrk -t1 ... -s tokens.lua URL -- TOKENS_FILE assertion POST /token, client_credentials, private_key_jwt
-- Refresh tokens work once, bearer tokens are counted once: the thread stops when they run out.
local tokens = {}
local i = 0
local refresh = false
local assertion = false
local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  refresh = args[2] == "refresh"
  assertion = args[2] == "assertion"
end

function request()
  i = i + 1
  if i > #tokens then
    wrk.thread:stop()
    i = #tokens
  end
  if assertion then
    return wrk.format("POST", "/token", form, "grant_type=client_credentials"
      .. "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
      .. "&client_assertion=" .. tokens[i])
  end
  if refresh then
    return wrk.format("POST", "/token", form, "grant_type=refresh_token&refresh_token=" .. tokens[i])
  end
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. tokens[i] })
end
