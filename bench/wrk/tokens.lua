-- Send every request with the next token of a file (one per line), so no token is sent twice.
-- Usage: wrk -t1 ... -s tokens.lua URL -- TOKENS_FILE           GET the URL's path as `Bearer TOKEN`
--        wrk -t1 ... -s tokens.lua URL -- TOKENS_FILE refresh   POST /token with the refresh grant
-- Refresh tokens work once, bearer tokens are counted once: the thread stops when they run out.
local tokens = {}
local i = 0
local refresh = false
local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
  refresh = args[2] == "refresh"
end

function request()
  i = i + 1
  if i > #tokens then
    wrk.thread:stop()
    i = #tokens
  end
  if refresh then
    return wrk.format("POST", "/token", form, "grant_type=refresh_token&refresh_token=" .. tokens[i])
  end
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. tokens[i] })
end
