-- gr_restore: FCALL gr_restore 0 region last_seq last_ms last_lc op...
-- For a region whose Redis lost ops it had issued (a failover to a replica
-- that lagged, a restore from an old snapshot): raise the sequence number to
-- last_seq (the newest op of the region's own stream) and the HLC to that
-- op's timestamp, so that no OpID is ever issued twice (brief, invariant 1),
-- and merge the given ops of the region's own stream that this Redis
-- missed. They are not logged again: they are in the stream already.
-- Returns {ops merged, sequence number afterwards}.
local function gr_restore(_, argv)
  begin_call()
  local region = argv[1]
  local last, lms, llc = tonumber(argv[2]), tonumber(argv[3]), tonumber(argv[4])
  local ops = {}
  for i = 5, #argv do
    local op = mp_unpack(argv[i])
    if type(op) ~= 'table' or op[1] ~= VERSION or op[2] ~= region or op[3] > last then
      return redis.error_reply('ERR corrupt op ' .. (i - 4) .. ' for a restore of ' .. region)
    end
    ops[#ops + 1] = op
  end
  db(1)
  local m = rcall('HMGET', 'meta', 'seq', 'ms', 'lc')
  local seq, cms, clc = tonumber(m[1] or '0'), tonumber(m[2] or '0'), tonumber(m[3] or '0')
  local t0 = rcall('TIME')
  local now = tonumber(t0[1]) * 1000 + math.floor(tonumber(t0[2]) / 1000)
  for _, op in ipairs(ops) do apply_op(op, now) end
  if last > seq then seq = last end
  if lms > cms or (lms == cms and llc > clc) then cms, clc = lms, llc end
  db(1)
  rcall('HSET', 'meta', 'seq', seq, 'ms', cms, 'lc', clc)
  return {#ops, seq}
end
