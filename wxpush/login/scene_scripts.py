"""The Lua scripts that move a scene (:mod:`wxpush.login.scenes`): each move is one script, so
two processes can never both move a scene, and one round trip checks, moves and tells."""

from __future__ import annotations

# KEYS[1] scene (its channel has the same name); KEYS[2], when given, the de-dup key of the
# callback that brings the change: if it is taken this is WeChat's retry, which changes
# nothing and gets what the key holds; the move takes it. ARGV: from-status, to-status,
# ttl-floor, the message to publish, the account the scene must belong to ('' = any), the
# de-dup key's ttl and marker ('' without KEYS[2]), the user a link scene links to ('' for a
# login: a login never moves a link scene, nor a link a login's), then field/value pairs.
# On a cluster the channel is sharded (SPUBLISH, the scene's slot; see move_script).
MOVE = """
local once = KEYS[2]
if once then
  local stored = redis.call('GET', once)
  if stored then return {'RETRY', stored} end
end
local s = redis.call('HMGET', KEYS[1], 'status', 'account', 'link')
if s[1] ~= ARGV[1] then return s[1] or false end
if ARGV[5] ~= '' and s[2] ~= ARGV[5] then return 'OTHER_ACCOUNT' end
if (s[3] or '') ~= ARGV[8] then return 'OTHER_PURPOSE' end
redis.call('HSET', KEYS[1], 'status', ARGV[2], unpack(ARGV, 9))
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', KEYS[1], ARGV[4])
if once then redis.call('SET', once, ARGV[7], 'EX', ARGV[6]) end
return 'OK'
"""


def move_script(sharded: bool) -> str:
    """:data:`MOVE`, publishing on the scene's sharded channel when ``sharded`` (a cluster)."""
    return MOVE.replace("'PUBLISH'", "'SPUBLISH'") if sharded else MOVE


# KEYS[1] scene; ARGV[1] the claim's mark (the family of the tokens it is for). Returns
# {user_id, new, provider, oidc, kind, ip} to the one caller that claims, else the status
# ('LINKED' for a link scene: it has nothing to claim).
CLAIM = """
local s = redis.call('HMGET', KEYS[1], 'status', 'claimed', 'user_id', 'new', 'provider', 'oidc',
                     'kind', 'ip', 'link')
if s[1] ~= 'REG' then return s[1] or false end
if s[9] then return 'LINKED' end
if s[2] == '1' then return 'CLAIMED' end
redis.call('HSET', KEYS[1], 'claimed', '1', 'claim', ARGV[1])
return {s[3], s[4], s[5] or '', s[6] or '', s[7] or '', s[8] or ''}
"""

# KEYS[1] scene; ARGV[1] the mark of the claim to give back. Only that claim is undone (a
# scene gone meanwhile is not brought back).
RELEASE = """
if redis.call('HGET', KEYS[1], 'claim') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'claimed', '0')
redis.call('HDEL', KEYS[1], 'claim')
return 1
"""
