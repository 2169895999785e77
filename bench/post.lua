-- wrk script: POST a body made here. Set BENCH_BODY=json4k|raw1m.
local kind = os.getenv("BENCH_BODY") or "json4k"
wrk.method = "POST"
if kind == "raw1m" then
  wrk.body = string.rep("u", 1048576)
  wrk.headers["Content-Type"] = "application/octet-stream"
else
  -- a JSON object of about 4 KiB: 64 keys with 51-character values
  local parts = {}
  for i = 1, 64 do
    parts[#parts + 1] = string.format('"key%02d": "%s"', i, string.rep("v", 51))
  end
  wrk.body = "{" .. table.concat(parts, ", ") .. "}"
  wrk.headers["Content-Type"] = "application/json"
end
