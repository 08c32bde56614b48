"""The Lua scripts. Each operation on a thread is one script, so it is atomic: a crash or a
lost connection between writes cannot leave a checkpoint that reads back without its values.

Written for plain Redis >= 6.2 (ZRANGE BYLEX REV), no modules. Every key a script touches is
in the thread's slot (see keys.py), so they run on Redis Cluster too.

The writes keep the thread bounded as they go: a checkpoint's write drops the ones
retention no longer keeps (with their pending writes and the values only they used), counts
the bytes the thread holds into its info hash, and refuses a checkpoint that would grow the
thread past its cap, taking back what the run wrote before it (`THREAD_TOO_LARGE`).
"""

from __future__ import annotations

from rillet_runtime.state.checkpoint.keys import NS_SUFFIXES

# Helpers, prepended to the scripts that call them.

_NAMESPACE_KEYS = (
    ("local NS_SUFFIXES = {" + ", ".join(f"'{suffix}'" for suffix in NS_SUFFIXES) + "}\n")
    + r"""
local function namespace_keys(prefix, ns_set)
  local keys = {}
  for _, ns in ipairs(redis.call('SMEMBERS', ns_set)) do
    for _, suffix in ipairs(NS_SUFFIXES) do table.insert(keys, prefix .. ns .. suffix) end
  end
  return keys
end
"""
)

# Every access refreshes the TTL of the whole thread.
_TOUCH = r"""
local function touch(prefix, ns_set, ttl)
  if ttl <= 0 then return end
  redis.call('PEXPIRE', ns_set, ttl)
  redis.call('PEXPIRE', prefix .. 'info', ttl)
  for _, key in ipairs(namespace_keys(prefix, ns_set)) do redis.call('PEXPIRE', key, ttl) end
end
"""

_REFERENCED_FIELDS = r"""
local function referenced_fields(joined)
  local fields = {}
  for field in string.gmatch(joined, '[^\1]+') do table.insert(fields, field) end
  return fields
end
"""

_WRITE_FIELDS = r"""
local function write_fields(wfields, cid)
  return redis.call('ZRANGE', wfields, '[' .. cid .. '\0', '[' .. cid .. '\0\255', 'BYLEX')
end
"""

# What a thread holds, in bytes: its hashes' field names and values and its sorted sets'
# members (Redis's own overhead aside). The scripts keep the total in the info hash as they
# write; a thread written before there was one is measured once, from its own keys.
_SIZES = r"""
local function ns_keys(prefix, ns)
  local base = prefix .. ns
  return base .. NS_SUFFIXES[1], base .. NS_SUFFIXES[2], base .. NS_SUFFIXES[3],
         base .. NS_SUFFIXES[4], base .. NS_SUFFIXES[5]
end

local function field_bytes(key, field)
  local len = redis.call('HSTRLEN', key, field)
  if len > 0 or redis.call('HEXISTS', key, field) == 1 then return #field + len end
  return 0
end

local function thread_bytes(prefix, ns_set, info)
  local known = redis.call('HGET', info, 'bytes')
  if known then return tonumber(known) end
  local total = 0
  for _, ns in ipairs(redis.call('SMEMBERS', ns_set)) do
    local idx, cps, blobs, writes, wfields = ns_keys(prefix, ns)
    for _, hash in ipairs({cps, blobs, writes}) do
      for _, field in ipairs(redis.call('HKEYS', hash)) do
        total = total + field_bytes(hash, field)
      end
    end
    for _, zset in ipairs({idx, wfields}) do
      for _, member in ipairs(redis.call('ZRANGE', zset, 0, -1)) do total = total + #member end
    end
  end
  return total
end

-- Where a total is kept; a thread without one is measured at its next checkpoint.
local function add_bytes(info, delta)
  if redis.call('HEXISTS', info, 'bytes') == 1 then redis.call('HINCRBY', info, 'bytes', delta) end
end

local function delete_fields(key, fields)
  for i = 1, #fields, 1000 do
    redis.call('HDEL', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
"""

# A checkpoint: its record in cps (the checkpoint, then these suffixes of its id), its entry
# in idx, its pending writes. `<id>\0r` names the run that wrote it.
_DROP_CHECKPOINT = r"""
local RECORD = {'', '\0m', '\0p', '\0v', '\0r'}

local function checkpoint_bytes(idx, cps, writes, wfields, cid)
  local total = 0
  if redis.call('ZSCORE', idx, cid) then total = #cid end
  for _, suffix in ipairs(RECORD) do total = total + field_bytes(cps, cid .. suffix) end
  for _, field in ipairs(write_fields(wfields, cid)) do
    total = total + #field + field_bytes(writes, field)
  end
  return total
end

-- Returns the bytes it freed.
local function drop_checkpoint(idx, cps, writes, wfields, cid)
  local freed = checkpoint_bytes(idx, cps, writes, wfields, cid)
  redis.call('ZREM', idx, cid)
  redis.call('HDEL', cps, cid, cid .. '\0m', cid .. '\0p', cid .. '\0v', cid .. '\0r')
  local wf = write_fields(wfields, cid)
  if #wf > 0 then
    redis.call('HDEL', writes, unpack(wf))
    redis.call('ZREM', wfields, unpack(wf))
  end
  return freed
end

-- The values no kept checkpoint references (`kept`: their ids; `extra`: the references of
-- one not written yet), and their bytes.
local function unreferenced_blobs(cps, blobs, kept, extra)
  local used = {}
  for _, field in ipairs(extra) do used[field] = true end
  for _, cid in ipairs(kept) do
    for _, field in ipairs(referenced_fields(redis.call('HGET', cps, cid .. '\0v') or '')) do
      used[field] = true
    end
  end
  local unused, bytes = {}, 0
  for _, field in ipairs(redis.call('HKEYS', blobs)) do
    if not used[field] then
      table.insert(unused, field)
      bytes = bytes + field_bytes(blobs, field)
    end
  end
  return unused, bytes
end

-- A read of a dropped checkpoint by id says so instead of finding nothing (GET).
local function mark_pruned(info, ns, cid)
  local marker = 'pruned\0' .. ns
  local before = redis.call('HGET', info, marker)
  if not before or cid > before then redis.call('HSET', info, marker, cid) end
end
"""

# Retention, and the cap's refusal.
_BOUNDS = r"""
-- What writing `cid` (of `run`) drops when `keep` (> 0) are kept: all but the newest
-- `keep`, never `cid` itself, and never the newest checkpoint from before the run (where a
-- rollback or a refused save leaves the thread). Returns the dropped ids (newest first) and
-- the kept ones other than `cid`.
local function retention(idx, cps, cid, run, keep)
  if keep <= 0 then return {}, {} end
  local newest_first, placed = {}, false
  for _, id in ipairs(redis.call('ZRANGE', idx, '+', '-', 'BYLEX', 'REV')) do
    if not placed and cid >= id then
      table.insert(newest_first, cid)
      placed = true
    end
    if id ~= cid then table.insert(newest_first, id) end
  end
  if not placed then table.insert(newest_first, cid) end
  if #newest_first <= keep then return {}, {} end
  local before_run = nil
  if run ~= '' then
    for _, id in ipairs(newest_first) do
      if id ~= cid and redis.call('HGET', cps, id .. '\0r') ~= run then
        before_run = id
        break
      end
    end
  end
  local dropped, kept = {}, {}
  for i, id in ipairs(newest_first) do
    if id ~= cid then
      if i <= keep or id == before_run then
        table.insert(kept, id)
      else
        table.insert(dropped, id)
      end
    end
  end
  return dropped, kept
end

-- A write over the cap: the run's checkpoints go, in every namespace, with the values only
-- they used, so the thread is as it was before the run; then the error reply. The run
-- stays refused (LangGraph may go on writing after a failed write, and what it writes would
-- reference values that went); an unnamed one, through `unsaved`: the checkpoint refused,
-- which any later checkpoint of that invocation follows.
local function refuse(prefix, ns_set, info, run, unsaved, total, would_hold, cap)
  redis.call('HSET', info, 'bytes', total, 'refused_run', run, 'refused_cid', unsaved,
             'refused_size', would_hold)
  if run ~= '' then
    for _, ns in ipairs(redis.call('SMEMBERS', ns_set)) do
      local idx, cps, blobs, writes, wfields = ns_keys(prefix, ns)
      local freed, kept = 0, {}
      for _, id in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
        if redis.call('HGET', cps, id .. '\0r') == run then
          freed = freed + drop_checkpoint(idx, cps, writes, wfields, id)
        else
          table.insert(kept, id)
        end
      end
      if freed > 0 then
        local unused, bytes = unreferenced_blobs(cps, blobs, kept, {})
        delete_fields(blobs, unused)
        redis.call('HINCRBY', info, 'bytes', -(freed + bytes))
        if #kept == 0 and redis.call('EXISTS', blobs, writes) == 0 then
          redis.call('SREM', ns_set, ns)
        end
      end
    end
  end
  return redis.error_reply('THREAD_TOO_LARGE ' .. would_hold .. ' ' .. cap)
end

-- A write of a refused run, or of an unnamed one that follows a refused checkpoint
-- (`after`): refused too; the unsaved chain goes on from `unsaved`.
local function still_refused(info, run, after, unsaved, cap)
  local marks = redis.call('HMGET', info, 'refused_run', 'refused_cid', 'refused_size')
  if (run ~= '' and marks[1] == run) or (run == '' and after ~= '' and marks[2] == after) then
    if run == '' then redis.call('HSET', info, 'refused_cid', unsaved) end
    return redis.error_reply('THREAD_TOO_LARGE ' .. marks[3] .. ' ' .. cap)
  end
  return nil
end
"""

_THREAD_HELPERS = (
    _NAMESPACE_KEYS + _TOUCH + _REFERENCED_FIELDS + _WRITE_FIELDS + _SIZES + _DROP_CHECKPOINT
)

# KEYS: ns_set idx cps blobs writes wfields info.
# ARGV: prefix ttl ns cid checkpoint metadata parent vfields run keep cap n, then n pairs of
#   (blob field, value). keep, cap: 0 for no limit. Measures first and writes only if the
#   thread stays within its cap.
PUT = (
    _THREAD_HELPERS
    + _BOUNDS
    + r"""
local ns_set, idx, cps, blobs, writes, wfields, info = unpack(KEYS)
local prefix, ttl, ns, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local run, keep, cap, n = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local record = {cid, ARGV[5], cid .. '\0m', ARGV[6], cid .. '\0p', ARGV[7], cid .. '\0v', ARGV[8],
                cid .. '\0r', run}
local refused = still_refused(info, run, ARGV[7], cid, cap)
if refused then return refused end
local total = thread_bytes(prefix, ns_set, info)
local added = 0
if not redis.call('ZSCORE', idx, cid) then added = #cid end
for i = 1, #record, 2 do
  added = added + #record[i] + #record[i + 1] - field_bytes(cps, record[i])
end
for i = 0, n - 1 do
  local field, value = ARGV[13 + 2 * i], ARGV[14 + 2 * i]
  added = added + #field + #value - field_bytes(blobs, field)
end
local dropped, kept = retention(idx, cps, cid, run, keep)
local freed, unused = 0, {}
for _, id in ipairs(dropped) do freed = freed + checkpoint_bytes(idx, cps, writes, wfields, id) end
if #dropped > 0 then
  local unused_bytes
  unused, unused_bytes = unreferenced_blobs(cps, blobs, kept, referenced_fields(ARGV[8]))
  freed = freed + unused_bytes
end
local holds = total + added - freed
if cap > 0 and holds > cap then
  return refuse(prefix, ns_set, info, run, cid, total, holds, cap)
end
redis.call('SADD', ns_set, ns)
for i = 0, n - 1 do redis.call('HSET', blobs, ARGV[13 + 2 * i], ARGV[14 + 2 * i]) end
redis.call('HSET', cps, unpack(record))
redis.call('ZADD', idx, 0, cid)
for _, id in ipairs(dropped) do drop_checkpoint(idx, cps, writes, wfields, id) end
delete_fields(blobs, unused)
if #dropped > 0 then mark_pruned(info, ns, dropped[1]) end
redis.call('HSET', info, 'bytes', holds)
touch(prefix, ns_set, ttl)
return 1
"""
)

# KEYS: ns_set writes wfields info. ARGV: prefix ttl ns run cid cap n, then n triples
# (field, value, overwrite); cid: the checkpoint they belong to. Within the cap like PUT.
PUT_WRITES = (
    _THREAD_HELPERS
    + _BOUNDS
    + r"""
local ns_set, writes, wfields, info = unpack(KEYS)
local prefix, ttl, ns, run, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local cap, n = tonumber(ARGV[6]), tonumber(ARGV[7])
local function growth(field, value, overwrite)
  local stored = field_bytes(writes, field)
  if stored == 0 then return 2 * #field + #value end  -- the hash's field and the index's member
  if overwrite == '1' then return #field + #value - stored end
  return 0
end
local refused = still_refused(info, run, cid, cid, cap)
if refused then return refused end
local total = thread_bytes(prefix, ns_set, info)
local added = 0
for i = 0, n - 1 do added = added + growth(ARGV[8 + 3 * i], ARGV[9 + 3 * i], ARGV[10 + 3 * i]) end
if cap > 0 and total + added > cap then
  return refuse(prefix, ns_set, info, run, '', total, total + added, cap)
end
redis.call('SADD', ns_set, ns)
added = 0
for i = 0, n - 1 do
  local field, value, overwrite = ARGV[8 + 3 * i], ARGV[9 + 3 * i], ARGV[10 + 3 * i]
  local grows = growth(field, value, overwrite)
  if overwrite == '1' then
    redis.call('HSET', writes, field, value)
  else
    redis.call('HSETNX', writes, field, value)
  end
  redis.call('ZADD', wfields, 0, field)
  added = added + grows
end
redis.call('HSET', info, 'bytes', total + added)
touch(prefix, ns_set, ttl)
return 1
"""
)

# KEYS: ns_set idx cps blobs writes wfields info. ARGV: prefix ttl cid ('' = latest) ns.
# Returns {cid, checkpoint, metadata, parent, blob fields, blob values, write fields, writes};
# {cid, part} when a part of the thread that must be there is not (corrupt: lost to
# eviction, or deleted by hand; cid '' when the index itself is gone); false for none.
# The keys of a thread are written, expired and deleted together, so one without another
# is never a legitimate state (blobs alone are: a rolled-back first run leaves them).
# {cid, 'pruned', ''} for a checkpoint asked for by id that retention dropped.
GET = (
    _NAMESPACE_KEYS
    + _TOUCH
    + _REFERENCED_FIELDS
    + _WRITE_FIELDS
    + r"""
local cid = ARGV[3]
if cid == '' then
  local latest = redis.call('ZRANGE', KEYS[2], '+', '-', 'BYLEX', 'REV', 'LIMIT', 0, 1)
  if #latest == 0 then
    if redis.call('EXISTS', KEYS[3], KEYS[5], KEYS[6]) > 0 then
      return {'', 'the index of its checkpoints'}
    end
    return false
  end
  cid = latest[1]
end
local rec = redis.call('HMGET', KEYS[3], cid, cid .. '\0m', cid .. '\0p', cid .. '\0v')
if not rec[1] then
  if redis.call('ZSCORE', KEYS[2], cid) then return {cid, 'the checkpoint'} end
  local pruned = redis.call('HGET', KEYS[7], 'pruned\0' .. ARGV[4])
  if pruned and cid <= pruned then return {cid, 'pruned', ''} end
  return false
end
if redis.call('EXISTS', KEYS[2]) == 0 then return {cid, 'the index of its checkpoints'} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {cid, 'the set of its namespaces'} end
local has_writes, has_wfields = redis.call('EXISTS', KEYS[5]), redis.call('EXISTS', KEYS[6])
if has_writes ~= has_wfields then
  return {cid, has_writes == 1 and 'the index of its pending writes' or 'its pending writes'}
end
local vfields = referenced_fields(rec[4])
local bvals = {}
if #vfields > 0 then bvals = redis.call('HMGET', KEYS[4], unpack(vfields)) end
local wf = write_fields(KEYS[6], cid)
local wv = {}
if #wf > 0 then wv = redis.call('HMGET', KEYS[5], unpack(wf)) end
touch(ARGV[1], KEYS[1], tonumber(ARGV[2]))
return {cid, rec[1], rec[2], rec[3], vfields, bvals, wf, wv}
"""
)

# KEYS: ns_set. ARGV: prefix. Deletes every key of the thread; returns the runs that wrote
# its checkpoints (their run index entries go too, from the caller: another slot).
DELETE_THREAD = (
    _NAMESPACE_KEYS
    + r"""
local runs, seen = {}, {}
for _, ns in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local base = ARGV[1] .. ns
  for _, cid in ipairs(redis.call('ZRANGE', base .. NS_SUFFIXES[1], 0, -1)) do
    local run = redis.call('HGET', base .. NS_SUFFIXES[2], cid .. '\0r')
    if run and run ~= '' and not seen[run] then
      seen[run] = true
      table.insert(runs, run)
    end
  end
end
for _, key in ipairs(namespace_keys(ARGV[1], KEYS[1])) do redis.call('DEL', key) end
-- The root namespace's keys even if the set naming them was lost (evicted).
for _, suffix in ipairs(NS_SUFFIXES) do redis.call('DEL', ARGV[1] .. suffix) end
redis.call('DEL', KEYS[1], ARGV[1] .. 'info')
return runs
"""
)

# KEYS: idx cps blobs writes wfields info. ARGV: cid. One checkpoint, its writes and the
# values no other checkpoint uses.
DELETE_CHECKPOINT = (
    _THREAD_HELPERS
    + r"""
local idx, cps, blobs, writes, wfields, info = unpack(KEYS)
local freed = drop_checkpoint(idx, cps, writes, wfields, ARGV[1])
local unused, bytes = unreferenced_blobs(cps, blobs, redis.call('ZRANGE', idx, 0, -1), {})
delete_fields(blobs, unused)
add_bytes(info, -(freed + bytes))
return 1
"""
)

# KEYS: idx cps blobs writes wfields info. ARGV: ns. Keeps the newest checkpoint and the
# blobs it uses.
KEEP_LATEST = (
    _THREAD_HELPERS
    + r"""
local idx, cps, blobs, writes, wfields, info = unpack(KEYS)
local ids = redis.call('ZRANGE', idx, '+', '-', 'BYLEX', 'REV')
if #ids == 0 then return 0 end
local freed = 0
for i = 2, #ids do freed = freed + drop_checkpoint(idx, cps, writes, wfields, ids[i]) end
local unused, bytes = unreferenced_blobs(cps, blobs, {ids[1]}, {})
delete_fields(blobs, unused)
add_bytes(info, -(freed + bytes))
if #ids > 1 then mark_pruned(info, ARGV[1], ids[2]) end
return #ids - 1
"""
)

# KEYS: ns_set info. ARGV: prefix. What the thread holds, in bytes (0: no such thread).
THREAD_BYTES = (
    _NAMESPACE_KEYS
    + _SIZES
    + r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local known = redis.call('HGET', KEYS[2], 'bytes')
if known then return tonumber(known) end
local total = thread_bytes(ARGV[1], KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'bytes', total)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return total
"""
)

# KEYS: a run's index. ARGV: `<thread>\0`. Forgets what the run wrote to that thread.
FORGET_RUN_THREAD = r"""
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(member, 1, #ARGV[1]) == ARGV[1] then redis.call('SREM', KEYS[1], member) end
end
return 1
"""
