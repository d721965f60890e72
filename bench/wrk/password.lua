-- POST /token with the password grant for alice on every request (the issuer hashes with argon2id).
-- Usage: wrk -t1 ... -s password.lua http://127.0.0.1:PORT/token
wrk.method = "POST"
wrk.body = "grant_type=password&username=alice&password=wonderland"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
