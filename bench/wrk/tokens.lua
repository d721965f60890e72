-- GET the path with the next bearer token of a file (one per line): every request a new token.
-- Usage: wrk -t1 ... -s tokens.lua URL -- TOKENS_FILE
-- The thread stops when the tokens run out, so no token is ever sent twice.
local tokens = {}
local i = 0

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
  return wrk.format("GET", wrk.path, { ["Authorization"] = "Bearer " .. tokens[i] })
end
