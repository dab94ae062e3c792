-- Entry point for remote ops: FCALL gr_apply 0 origin op... Applies the ops of one
-- origin in sequence order and raises the applied vector in the same atomic
-- step (brief, invariant 4). Ops at or below the applied vector are skipped
-- (redelivery, replay); an op above applied+1 is a gap and stops the batch
-- with an error before anything is written.
-- Returns {applied, last seq, conflict kind, count, ...}.
-- Every conflict is also recorded, newest first, in the bounded list
-- 'conflicts' of db 1 (CONFLICT_LOG records, see child.Engine.Conflicts) and
-- counted in the hash 'conflicts:kinds'; nothing is written without one.

local CONFLICT_LOG = 1000

local function gr_apply(_, argv)
  begin_call()
  local origin = argv[1]
  db(1)
  local last = tonumber(rcall('HGET', 'applied', origin) or '0')
  local ops = {}
  local expect = last
  for i = 2, #argv do
    local op = mp_unpack(argv[i])
    if type(op) ~= 'table' or op[1] ~= VERSION or op[2] ~= origin then
      return redis.error_reply('ERR corrupt op ' .. (i - 1) .. ' for origin ' .. origin)
    end
    if op[3] > expect + 1 then
      return redis.error_reply('GAP origin ' .. origin .. ' expected ' .. (expect + 1) .. ' got ' .. op[3])
    end
    if op[3] == expect + 1 then
      ops[#ops + 1] = op
      expect = op[3]
    end
  end
  if #ops == 0 then return {0, last} end
  local t0 = rcall('TIME')
  local now = tonumber(t0[1]) * 1000 + math.floor(tonumber(t0[2]) / 1000)
  local counts = {}
  local recs = {}
  local ms, lc = 0, 0
  for _, op in ipairs(ops) do
    local cs, rs = apply_op(op, now)
    for _, c in ipairs(cs) do counts[c] = (counts[c] or 0) + 1 end
    for _, r in ipairs(rs) do recs[#recs + 1] = r end
    if op[4] > ms or (op[4] == ms and op[5] > lc) then ms, lc = op[4], op[5] end
  end
  db(1)
  if #recs > 0 then
    local enc = {}
    for i = math.max(1, #recs - CONFLICT_LOG + 1), #recs do enc[#enc + 1] = mp_pack(recs[i]) end
    for i = 1, #enc, 500 do
      rcall('LPUSH', 'conflicts', unpack_list(enc, i, math.min(i + 499, #enc)))
    end
    rcall('LTRIM', 'conflicts', 0, CONFLICT_LOG - 1)
    for k, v in pairs(counts) do rcall('HINCRBY', 'conflicts:kinds', k, v) end
  end
  rcall('HSET', 'applied', origin, expect)
  -- the HLC observes the newest remote timestamp
  local m = rcall('HMGET', 'meta', 'ms', 'lc')
  local cms, clc = tonumber(m[1] or '0'), tonumber(m[2] or '0')
  if ms > cms or (ms == cms and lc > clc) then rcall('HSET', 'meta', 'ms', ms, 'lc', lc) end
  local out = {#ops, expect}
  for k, v in pairs(counts) do
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end
