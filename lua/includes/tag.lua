--[[
  tag: the keys of a department-day tag, bound to named locals.

  Every state-machine script of a department-day tag receives the same eleven KEYS,
  in this order (inventory/store/keys.py builds them; nowhere else does):
    KEYS[1] meta         hash   seq, fenced, tag, policy (hold_ttl_ms, max_hold_ms,
                                extend_ms, one_per_day, rerelease_min_ms, rerelease_max_ms)
    KEYS[2] schedules    hash   "<schedule>:<field>" -> value
    KEYS[3] slots        hash   "<slot>:<field>" -> value (sched, cap, rem, held, booked, wait)
    KEYS[4] holds        hash   "<hold>" -> JSON hold record
    KEYS[5] patients     hash   "<patient>" -> space-separated ids of open holds and bookings
    KEYS[6] timers       zset   "<slot>|<kind>|<id>" scored by due time (ms): the expirer's index
    KEYS[7] slot_timers  zset   "<slot>|<due:15 digits>|<kind>|<id>", all scores 0: a slot's
                                due timers in due order by ZRANGEBYLEX, for reserve's reclaim
    KEYS[8] outbox       stream one event per state change
    KEYS[9] waitlist     hash   "<entry>" -> JSON waitlist entry; "a|<schedule>|<patient>"
                                -> the patient's active entry (waiting or offered)
    KEYS[10] waitq       zset   "<schedule>|<seq:15 digits>|<entry>", all scores 0: each
                                schedule's waiting entries in join order (ZRANGEBYLEX)
    KEYS[11] offers      zset   "<hold>" scored by when it was made: waitlist offers whose
                                patient-tag side (blacklist, at most N open) is not settled
  Timer kinds: "h" = a hold's payment deadline, "w" = a freed unit waiting out the
  anti-scalping delay before it returns to the pool.

  Provides: K_META, K_SCHEDULES, K_SLOTS, K_HOLDS, K_PATIENTS, K_TIMERS, K_SLOT_TIMERS,
    K_OUTBOX, K_WAITLIST, K_WAITQ, K_OFFERS (constants: the key names above), and
    TAG_KEY_COUNT (11: a script's own extra keys, such as reserve's rate-limit buckets,
    follow them).
  Expects: the eleven keys as KEYS[1..11].
]]
local K_META, K_SCHEDULES, K_SLOTS, K_HOLDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_PATIENTS, K_TIMERS, K_SLOT_TIMERS, K_OUTBOX = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_WAITLIST, K_WAITQ, K_OFFERS = KEYS[9], KEYS[10], KEYS[11]
local TAG_KEY_COUNT = 11
