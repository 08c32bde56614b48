"""The Lua scripts. Each operation on a thread is one script, so it is atomic: a crash or a
lost connection between writes cannot leave a checkpoint that reads back without its values.

Written for plain Redis >= 6.2 (ZRANGE BYLEX REV), no modules. Every key a script touches is
in the thread's slot (see keys.py), so they run on Redis Cluster too.
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

_DROP_CHECKPOINT = r"""
local function drop_checkpoint(idx, cps, writes, wfields, cid)
  redis.call('ZREM', idx, cid)
  redis.call('HDEL', cps, cid, cid .. '\0m', cid .. '\0p', cid .. '\0v')
  local wf = write_fields(wfields, cid)
  if #wf > 0 then
    redis.call('HDEL', writes, unpack(wf))
    redis.call('ZREM', wfields, unpack(wf))
  end
end
"""

# KEYS: ns_set idx cps blobs. ARGV: prefix ttl ns cid checkpoint metadata parent vfields n
#   then n pairs of (blob field, value).
PUT = (
    _NAMESPACE_KEYS
    + _TOUCH
    + r"""
redis.call('SADD', KEYS[1], ARGV[3])
local n = tonumber(ARGV[9])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[4], ARGV[10 + 2 * i], ARGV[11 + 2 * i])
end
local cid = ARGV[4]
redis.call('HSET', KEYS[3], cid, ARGV[5], cid .. '\0m', ARGV[6], cid .. '\0p', ARGV[7],
           cid .. '\0v', ARGV[8])
redis.call('ZADD', KEYS[2], 0, cid)
touch(ARGV[1], KEYS[1], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: ns_set writes wfields. ARGV: prefix ttl ns n then n triples (field, value, overwrite).
PUT_WRITES = (
    _NAMESPACE_KEYS
    + _TOUCH
    + r"""
redis.call('SADD', KEYS[1], ARGV[3])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local field, value = ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  if ARGV[7 + 3 * i] == '1' then
    redis.call('HSET', KEYS[2], field, value)
  else
    redis.call('HSETNX', KEYS[2], field, value)
  end
  redis.call('ZADD', KEYS[3], 0, field)
end
touch(ARGV[1], KEYS[1], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: ns_set idx cps blobs writes wfields. ARGV: prefix ttl cid ('' = latest).
# Returns {cid, checkpoint, metadata, parent, blob fields, blob values, write fields, writes};
# {cid, part} when a part of the thread that must be there is not (corrupt: lost to
# eviction, or deleted by hand; cid '' when the index itself is gone); false for none.
# The keys of a thread are written, expired and deleted together, so one without another
# is never a legitimate state (blobs alone are: a rolled-back first run leaves them).
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

# KEYS: ns_set. ARGV: prefix. Deletes every key of the thread.
DELETE_THREAD = (
    _NAMESPACE_KEYS
    + r"""
for _, key in ipairs(namespace_keys(ARGV[1], KEYS[1])) do redis.call('DEL', key) end
-- The root namespace's keys even if the set naming them was lost (evicted).
for _, suffix in ipairs(NS_SUFFIXES) do redis.call('DEL', ARGV[1] .. suffix) end
redis.call('DEL', KEYS[1])
return 1
"""
)

# KEYS: idx cps writes wfields. ARGV: cid. One checkpoint and its writes.
DELETE_CHECKPOINT = (
    _WRITE_FIELDS
    + _DROP_CHECKPOINT
    + r"""
drop_checkpoint(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])
return 1
"""
)

# KEYS: idx cps blobs writes wfields. Keeps the newest checkpoint and the blobs it uses.
KEEP_LATEST = (
    _REFERENCED_FIELDS
    + _WRITE_FIELDS
    + _DROP_CHECKPOINT
    + r"""
local ids = redis.call('ZRANGE', KEYS[1], '+', '-', 'BYLEX', 'REV')
if #ids == 0 then return 0 end
local keep = {}
for _, field in ipairs(referenced_fields(redis.call('HGET', KEYS[2], ids[1] .. '\0v') or '')) do
  keep[field] = true
end
for i = 2, #ids do drop_checkpoint(KEYS[1], KEYS[2], KEYS[4], KEYS[5], ids[i]) end
for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
  if not keep[field] then redis.call('HDEL', KEYS[3], field) end
end
return #ids - 1
"""
)
