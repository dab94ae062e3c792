-- Tombstone collection: FCALL gr_gc 0 phase cursor count region seq ...
-- One step of an incremental scan (SCAN cursor COUNT count) that applies
-- crdt.Key.GC with the floor vector (region -> seq: the pointwise minimum of
-- the applied vectors of every region that is not evicted) to the state it
-- finds:
--   phase 1: database 1, the per-key state: 'k:' string records, 'h:', 's:',
--            'z:' element hashes and 'x:' expiry registers;
--   phase 0: database 0, the state records of live strings.
-- Removal-context entries at or below the floor are dropped unless a live
-- counter run of that region still needs them or the run they observed may
-- still be extended (crdt.Elem.gc), elements left empty are dropped (and a
-- per-key hash with them), expiry-register removal entries at or below the
-- floor are dropped and an empty register with them. Nothing visible
-- changes; TTLs are kept. The caller runs the phases until the cursor is 0.
-- Returns {next cursor, keys scanned, removal entries dropped, elements
-- dropped, state records decoded}.

-- crdt.Elem.gc: drops what the floor allows; returns how many removal
-- entries it dropped
local function gc_elem(el, floor)
  local n = 0
  for r, rm in pairs(el.r) do
    if rm[1] <= (floor[r] or 0) then
      local c = el.c[r]
      -- kept: a live run of r continues the run the remove observed, or
      -- no run of r is live and r may still extend the observed one
      if not ((c and c[2] == rm[2]) or (not c and rm[2] ~= 0)) then
        el.r[r] = nil
        n = n + 1
      end
    end
  end
  return n
end

-- gc_record collects one state record; returns the new record (nil when the
-- element is empty), removal entries dropped, whether it changed and
-- whether it was decoded. A record of two or three items (version,
-- entries, counter runs: enc_elem and crdt.MarshalState leave out the
-- removal context when it is empty) that is not an empty element has
-- nothing to collect: it is passed over without decoding, which is what
-- most records look like after their first collection. The version is one
-- byte; 0x90 is an empty entries array.
local function gc_record(s, floor)
  local b = s:byte(1)
  if b == 0x93 or (b == 0x92 and s:byte(3) ~= 0x90) then return s, 0, false, false end
  local ok, el = pcall(dec_state, s)
  if not ok then return s, 0, false, true end -- not ours to judge: left alone
  local n = gc_elem(el, floor)
  if elem_empty(el) then return nil, n, true, true end
  if n == 0 then return s, 0, false, true end
  return enc_elem(el), n, true, true
end

local function gr_gc(_, argv)
  begin_call()
  local phase, cursor, count = tonumber(argv[1]), argv[2], tonumber(argv[3])
  local floor = {}
  for i = 4, #argv - 1, 2 do floor[argv[i]] = tonumber(argv[i + 1]) end
  local rms, elems, decoded = 0, 0, 0
  db(phase)
  local res
  if phase == 1 then
    res = rcall('SCAN', cursor, 'MATCH', '[khszx]:*', 'COUNT', count)
  else
    res = rcall('SCAN', cursor, 'COUNT', count, 'TYPE', 'string')
  end
  local keys = res[2]
  for _, k in ipairs(keys) do
    local p = phase == 1 and k:sub(1, 2) or ''
    if p == '' or p == 'k:' then
      local s = rcall('GET', k)
      if s then
        local rec, n, changed, dec = gc_record(s, floor)
        rms = rms + n
        if dec then decoded = decoded + 1 end
        if rec == nil and p == 'k:' then
          rcall('DEL', k)
          elems = elems + 1
        elseif changed and rec then
          rcall('SET', k, rec, 'KEEPTTL')
        end
      end
    elseif p == 'x:' then
      local s = rcall('GET', k)
      local ok, _, x = pcall(dec_state, s)
      if s and ok then
        local n = 0
        for r, sq in pairs(x.r) do
          if sq <= (floor[r] or 0) then x.r[r] = nil; n = n + 1 end
        end
        rms = rms + n
        if n > 0 then
          local xs = enc_exp(x)
          if xs then rcall('SET', k, xs, 'KEEPTTL') else rcall('DEL', k) end
        end
      end
    else
      local kv = rcall('HGETALL', k)
      for i = 1, #kv, 2 do
        local rec, n, changed, dec = gc_record(kv[i + 1], floor)
        rms = rms + n
        if dec then decoded = decoded + 1 end
        if rec == nil then
          rcall('HDEL', k, kv[i])
          elems = elems + 1
        elseif changed then
          rcall('HSET', k, kv[i], rec)
        end
      end
    end
  end
  return {res[1], #keys, rms, elems, decoded}
end
