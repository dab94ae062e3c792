-- Entry point for remote ops: FCALL gr_apply 0 origin ms lc item... Applies
-- the ops of one origin in sequence order and raises the applied vector in
-- the same atomic step (brief, invariant 4). Ops at or below the applied
-- vector are skipped (redelivery, replay); an op above applied+1 is a gap and
-- stops the batch with an error before anything is written.
-- An item is an encoded op, or a fast item (child/fastapply.go) of six
-- arguments: '=', seq, key, record read ('' for none), merged record,
-- encoded op. A fast item writes the merged record if the key still holds
-- the record read, and merges the encoded op the general way otherwise.
-- ms and lc are the newest timestamp of the fast items (the HLC observes it).
-- Returns {applied, last seq, applied by fast items, conflict kind, count, ...}.
-- Every conflict is also recorded, newest first, in the bounded list
-- 'conflicts' of db 1 (CONFLICT_LOG records, see child.Engine.Conflicts) and
-- counted in the hash 'conflicts:kinds'; nothing is written without one.

local CONFLICT_LOG = 1000

-- decode_op decodes an encoded op of origin, or returns nil if it is corrupt
local function decode_op(s, origin)
  local op = mp_unpack(s)
  if type(op) ~= 'table' or op[1] ~= VERSION or op[2] ~= origin then return nil end
  return op
end

-- cas_write is a fast item's write: the merged record, if the key still
-- holds the record read (and, as apply_str_live requires, has no TTL, or,
-- read as absent, has no state in db 1 either). Returns whether it wrote.
local function cas_write(name, old, new)
  db(0)
  local s = redis.pcall('GET', name)
  if old == '' then
    if s ~= false then return false end
    db(1)
    if rcall('EXISTS', 'k:' .. name, 'x:' .. name, 'h:' .. name, 's:' .. name, 'z:' .. name) ~= 0 then return false end
    db(0)
  elseif s ~= old or rcall('PTTL', name) ~= -1 then
    return false
  end
  rcall('SET', name, new)
  return true
end

local function gr_apply(_, argv)
  begin_call()
  local origin = argv[1]
  local ms, lc = tonumber(argv[2]), tonumber(argv[3])
  db(1)
  local last = tonumber(rcall('HGET', 'applied', origin) or '0')
  -- items to apply: an op table, or the index in argv of a fast item
  local items = {}
  local expect = last
  local i, n = 4, 0
  while i <= #argv do
    n = n + 1
    local seq, item
    if argv[i] == '=' then
      seq, item = tonumber(argv[i + 1]), i
      i = i + 6
    else
      item = decode_op(argv[i], origin)
      if not item then
        return redis.error_reply('ERR corrupt op ' .. n .. ' for origin ' .. origin)
      end
      seq = item[3]
      i = i + 1
    end
    if seq > expect + 1 then
      return redis.error_reply('GAP origin ' .. origin .. ' expected ' .. (expect + 1) .. ' got ' .. seq)
    end
    if seq == expect + 1 then
      items[#items + 1] = item
      expect = seq
    end
  end
  if #items == 0 then return {0, last, 0} end
  local t0 = rcall('TIME')
  local now = tonumber(t0[1]) * 1000 + math.floor(tonumber(t0[2]) / 1000)
  local counts = {}
  local recs = {}
  local fast = 0
  for _, op in ipairs(items) do
    if type(op) == 'number' then
      local k = op
      op = nil
      if cas_write(argv[k + 2], argv[k + 3], argv[k + 4]) then
        fast = fast + 1
      else
        op = decode_op(argv[k + 5], origin)
        if not op then
          return redis.error_reply('ERR corrupt op for origin ' .. origin .. ' at sequence ' .. argv[k + 1])
        end
      end
    end
    if op then
      local cs, rs = apply_op(op, now)
      for _, c in ipairs(cs) do counts[c] = (counts[c] or 0) + 1 end
      for _, r in ipairs(rs) do recs[#recs + 1] = r end
      if op[4] > ms or (op[4] == ms and op[5] > lc) then ms, lc = op[4], op[5] end
    end
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
  local out = {#items, expect, fast}
  for k, v in pairs(counts) do
    out[#out + 1] = k
    out[#out + 1] = v
  end
  return out
end
