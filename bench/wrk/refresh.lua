-- POST /token with the refresh grant, each request spending the next refresh token of a file.
-- Usage: wrk -t1 ... -s refresh.lua URL -- REFRESH_TOKENS_FILE
-- Refresh tokens work once; the thread stops when they run out.
local tokens = {}
local i = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

function init(args)
  for line in io.lines(args[1]) do
    tokens[#tokens + 1] = line
  end
end

function request()
  i = i + 1
  if i > #tokens then
    wrk.thread:stop()
    i = #tokens
  end
  return wrk.format("POST", "/token", headers, "grant_type=refresh_token&refresh_token=" .. tokens[i])
end
