//! The Lua scripts of the Redis backend: every step that reads and then writes runs as one
//! script, so that Redis executes it atomically and two instances can never interleave
//! inside it (two claims of one key, a completion and a deferral, two takers of one
//! deferred reply or of one orphaned delivery).
//!
//! Key layout, under the configured prefix `P` (a *suffix* is `account|dedup key`; account
//! names cannot contain `|`, so it is unambiguous):
//! - `P seq` — the record ids, allocated in arrival order;
//! - `P c:<suffix>` — the live claim: the id of the record it made (TTL: claims' retention);
//! - `P r:<id>` — the record (a hash: the message, attempts, completion, answer, deferral,
//!   owner), kept for the inbox retention (TTL as a backstop to pruning);
//! - `P inbox`, `P inbox:<account>` — record ids by arrival time, for listing and pruning
//!   (members are the ids zero-padded to 20 digits, so that records of one millisecond
//!   sort by id, newest claim last); `P k:<suffix>` — the latest record of a key, for
//!   looking one message up after its claim expired;
//! - `P claims` — live claims by first arrival, for the live count and their expiry;
//! - `P running:<owner>` — the records an instance runs a handler for; `P owners` — every
//!   instance that has claimed; `P lease:<owner>` — an instance's heartbeat (TTL);
//! - `P d:<account>|<follower>` — deferred replies of one follower, oldest first;
//! - `P o:<suffix>` — a push delivery (a hash: follower, creation, state, owner);
//!   `P outbox` (all, by creation) and `P opending` (pending ones, by creation);
//! - `P n:messages`, `P n:pruned` — the counters behind `Store::stats`;
//! - the channel `P done` — a completion's suffix, published by the completing script.
//!
//! The scripts name keys they compute from the prefix rather than declaring them in `KEYS`,
//! so they run on a standalone Redis (or a primary behind Sentinel), not on Redis Cluster.
//! Numbers that Lua would print in exponent form (timestamps) are passed in and stored as
//! the strings the gateway wrote.

use std::sync::LazyLock;

use redis::Script;

/// Claims a key: counts a retry of a live claim, or records the message under a new id.
/// ARGV: prefix, suffix, received_at_ms, claims retention ms, record TTL ms (0: none),
/// owner, account, dedup, follower, kind, inbound JSON.
/// Returns `{'first', 1, '', messages, live claims}`, `{'in_flight', n, ''}` or
/// `{'done', n, completion JSON}`.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, suffix = ARGV[1], ARGV[2]
local at, claims_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local ck = p .. 'c:' .. suffix
local id = redis.call('GET', ck)
if id then
  local rk = p .. 'r:' .. id
  local first_at = redis.call('HGET', rk, 'at')
  if first_at and at - tonumber(first_at) <= claims_ms then
    local n = redis.call('HINCRBY', rk, 'n', 1)
    local done = redis.call('HGET', rk, 'done')
    if done then return {'done', tostring(n), done} end
    return {'in_flight', tostring(n), ''}
  end
end
id = tostring(redis.call('INCR', p .. 'seq'))
local rk = p .. 'r:' .. id
redis.call('HSET', rk, 'account', ARGV[7], 'dedup', ARGV[8], 'from', ARGV[9],
  'kind', ARGV[10], 'json', ARGV[11], 'at', ARGV[3], 'n', '1', 'owner', ARGV[6])
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', rk, ARGV[5]) end
redis.call('SET', ck, id, 'PX', claims_ms + 60000)
local kk = p .. 'k:' .. suffix
redis.call('SET', kk, id)
if tonumber(ARGV[5]) > 0 then redis.call('PEXPIRE', kk, ARGV[5]) end
local member = string.format('%020d', tonumber(id))
redis.call('ZADD', p .. 'inbox', ARGV[3], member)
redis.call('ZADD', p .. 'inbox:' .. ARGV[7], ARGV[3], member)
redis.call('ZADD', p .. 'claims', ARGV[3], suffix)
redis.call('SADD', p .. 'running:' .. ARGV[6], id)
redis.call('PEXPIRE', p .. 'running:' .. ARGV[6], claims_ms + 60000)
redis.call('SADD', p .. 'owners', ARGV[6])
redis.call('PEXPIRE', p .. 'owners', claims_ms + 60000)
local messages = redis.call('INCR', p .. 'n:messages')
return {'first', '1', '', tostring(messages), tostring(redis.call('ZCARD', p .. 'claims'))}
",
    )
});

/// Records a completion, defers its reply when that was asked before it finished, frees
/// the owner's running entry and publishes the suffix. ARGV: prefix, suffix, completion
/// JSON, '1' when it has a reply. Returns 0 when the key has no live claim.
pub(super) static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local id = redis.call('GET', p .. 'c:' .. ARGV[2])
if not id then return 0 end
local rk = p .. 'r:' .. id
if redis.call('EXISTS', rk) == 0 then return 0 end
redis.call('HSET', rk, 'done', ARGV[3], 'reply', ARGV[4])
local f = redis.call('HMGET', rk, 'dwc', 'owner', 'account', 'from', 'at')
if f[1] == '1' then
  redis.call('HDEL', rk, 'dwc')
  if ARGV[4] == '1' then
    redis.call('HSET', rk, 'def', '1')
    redis.call('ZADD', p .. 'd:' .. f[3] .. '|' .. f[4], f[5], id)
  end
end
if ARGV[4] ~= '1' then redis.call('HSET', rk, 'def', '0') end
if f[2] then redis.call('SREM', p .. 'running:' .. f[2], id) end
redis.call('PUBLISH', p .. 'done', ARGV[2])
return 1
",
    )
});

/// Where a claim stands, for waiters. ARGV: prefix, suffix. Returns `{'none'}`,
/// `{'running'}` or `{'done', completion JSON}`.
pub(super) static STATUS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', ARGV[1] .. 'c:' .. ARGV[2])
if not id then return {'none'} end
local rk = ARGV[1] .. 'r:' .. id
local done = redis.call('HGET', rk, 'done')
if done then return {'done', done} end
if redis.call('EXISTS', rk) == 0 then return {'none'} end
return {'running'}
",
    )
});

/// Records the answer of one attempt and appends it to the record's answer log (bounded to
/// 1 KiB). ARGV: prefix, suffix, kind, attempt, log text. Returns 0 when the key has no
/// live claim.
pub(super) static ANSWER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('GET', ARGV[1] .. 'c:' .. ARGV[2])
if not id then return 0 end
local rk = ARGV[1] .. 'r:' .. id
if redis.call('EXISTS', rk) == 0 then return 0 end
redis.call('HSET', rk, 'ans', ARGV[3], 'ansn', ARGV[4])
local log = redis.call('HGET', rk, 'anss') or ''
if #log < 1024 then redis.call('HSET', rk, 'anss', log .. ARGV[5]) end
return 1
",
    )
});

/// Defers the reply of a key to the follower's next message, or marks it to be deferred
/// when its handler finishes. ARGV: prefix, suffix. Returns 0 when the key has no claim.
pub(super) static DEFER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local id = redis.call('GET', p .. 'c:' .. ARGV[2])
if not id then return 0 end
local rk = p .. 'r:' .. id
local f = redis.call('HMGET', rk, 'done', 'reply', 'account', 'from', 'at')
if not f[3] then return 0 end
if not f[1] then
  redis.call('HSET', rk, 'dwc', '1')
elseif f[2] == '1' then
  redis.call('HSET', rk, 'def', '1')
  redis.call('ZADD', p .. 'd:' .. f[3] .. '|' .. f[4], f[5], id)
end
return 1
",
    )
});

/// Takes the oldest deferred reply of a follower, at most once. ARGV: prefix, account,
/// follower. Returns `{dedup, completion JSON}` or nil.
pub(super) static TAKE_DEFERRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local dk = p .. 'd:' .. ARGV[2] .. '|' .. ARGV[3]
while true do
  local ids = redis.call('ZRANGE', dk, 0, 0)
  if #ids == 0 then return false end
  local id = ids[1]
  redis.call('ZREM', dk, id)
  local rk = p .. 'r:' .. id
  local f = redis.call('HMGET', rk, 'def', 'dedup', 'done')
  if f[1] == '1' and f[3] then
    redis.call('HSET', rk, 'def', '0')
    return {f[2], f[3]}
  end
end
",
    )
});

/// Forgets claims past their retention and removes history past the inbox retention, at
/// most `batch` of each. ARGV: prefix, claims horizon ms, history horizon ms ('' keeps
/// history), batch. Returns `{removed, messages, pruned, live claims}`.
pub(super) static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, batch = ARGV[1], tonumber(ARGV[4])
local old = redis.call('ZRANGEBYSCORE', p .. 'claims', '-inf', '(' .. ARGV[2], 'LIMIT', 0, batch)
for _, suffix in ipairs(old) do
  redis.call('DEL', p .. 'c:' .. suffix)
  redis.call('ZREM', p .. 'claims', suffix)
end
local removed = 0
if ARGV[3] ~= '' then
  local ids = redis.call('ZRANGEBYSCORE', p .. 'inbox', '-inf', '(' .. ARGV[3], 'LIMIT', 0, batch)
  for _, member in ipairs(ids) do
    local id = tostring(tonumber(member))
    local rk = p .. 'r:' .. id
    local f = redis.call('HMGET', rk, 'account', 'from', 'owner', 'dedup')
    if f[1] then
      redis.call('ZREM', p .. 'inbox:' .. f[1], member)
      redis.call('ZREM', p .. 'd:' .. f[1] .. '|' .. f[2], id)
      local kk = p .. 'k:' .. f[1] .. '|' .. f[4]
      if redis.call('GET', kk) == id then redis.call('DEL', kk) end
    end
    if f[3] then redis.call('SREM', p .. 'running:' .. f[3], id) end
    redis.call('DEL', rk)
    redis.call('ZREM', p .. 'inbox', member)
    removed = removed + 1
  end
  local deliveries = redis.call('ZRANGEBYSCORE', p .. 'outbox', '-inf', '(' .. ARGV[3], 'LIMIT', 0, batch)
  for _, suffix in ipairs(deliveries) do
    redis.call('DEL', p .. 'o:' .. suffix)
    redis.call('ZREM', p .. 'outbox', suffix)
    redis.call('ZREM', p .. 'opending', suffix)
  end
end
if removed > 0 then
  redis.call('DECRBY', p .. 'n:messages', removed)
  redis.call('INCRBY', p .. 'n:pruned', removed)
end
return {removed, tonumber(redis.call('GET', p .. 'n:messages') or '0'),
  tonumber(redis.call('GET', p .. 'n:pruned') or '0'), redis.call('ZCARD', p .. 'claims')}
",
    )
});

/// Records a pending delivery unless one exists. ARGV: prefix, suffix, follower,
/// created_at_ms, owner, TTL ms (0: none). Returns 1 when recorded.
pub(super) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local ok = p .. 'o:' .. ARGV[2]
if redis.call('EXISTS', ok) == 1 then return 0 end
redis.call('HSET', ok, 'to', ARGV[3], 'created', ARGV[4], 'state', 'pending', 'owner', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', ok, ARGV[6]) end
redis.call('ZADD', p .. 'outbox', ARGV[4], ARGV[2])
redis.call('ZADD', p .. 'opending', ARGV[4], ARGV[2])
return 1
",
    )
});

/// The pending deliveries this instance may work on, oldest first: its own, and, when
/// `takeover` is '1', those of instances whose lease lapsed, which become its own.
/// ARGV: prefix, owner, takeover. Returns flat triples `suffix, follower, created_at_ms`.
pub(super) static TAKE_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, me = ARGV[1], ARGV[2]
local out = {}
for _, suffix in ipairs(redis.call('ZRANGE', p .. 'opending', 0, -1)) do
  local ok = p .. 'o:' .. suffix
  local f = redis.call('HMGET', ok, 'owner', 'to', 'created', 'state')
  if f[4] ~= 'pending' then
    redis.call('ZREM', p .. 'opending', suffix)
  elseif f[1] == me or (ARGV[3] == '1' and redis.call('EXISTS', p .. 'lease:' .. f[1]) == 0) then
    redis.call('HSET', ok, 'owner', me)
    table.insert(out, suffix)
    table.insert(out, f[2])
    table.insert(out, f[3])
  end
end
return out
",
    )
});

/// Records the final state of a delivery. ARGV: prefix, suffix, state, reason ('' none),
/// finished_at_ms.
pub(super) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = ARGV[1]
local ok = p .. 'o:' .. ARGV[2]
if redis.call('EXISTS', ok) == 0 then return 0 end
redis.call('HSET', ok, 'state', ARGV[3], 'reason', ARGV[4], 'finished', ARGV[5])
redis.call('ZREM', p .. 'opending', ARGV[2])
return 1
",
    )
});

/// Settles the running claims of every other instance whose lease lapsed: each is
/// completed as failed with the interrupted error (and its waiters woken), so that a retry
/// gets `Done` instead of waiting forever or running the handler again. ARGV: prefix,
/// interrupted completion JSON, this instance. Returns how many claims were settled.
pub(super) static SETTLE_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p, me = ARGV[1], ARGV[3]
local settled = 0
for _, owner in ipairs(redis.call('SMEMBERS', p .. 'owners')) do
  if owner ~= me and redis.call('EXISTS', p .. 'lease:' .. owner) == 0 then
    for _, id in ipairs(redis.call('SMEMBERS', p .. 'running:' .. owner)) do
      local rk = p .. 'r:' .. id
      local f = redis.call('HMGET', rk, 'done', 'account', 'dedup')
      if f[2] and not f[1] then
        redis.call('HSET', rk, 'done', ARGV[2], 'reply', '0', 'def', '0')
        redis.call('HDEL', rk, 'dwc')
        redis.call('PUBLISH', p .. 'done', f[2] .. '|' .. f[3])
        settled = settled + 1
      end
    end
    redis.call('DEL', p .. 'running:' .. owner)
    redis.call('SREM', p .. 'owners', owner)
  end
end
return settled
",
    )
});
