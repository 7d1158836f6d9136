"""The request stream every generator sends: request ``i`` books patient ``i mod P`` on
department-day ``(i div P) mod D`` (the Python generator and the wrk script alike)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: The one request the benchmark sends, to every side.
PATH = "/v1/holds"
CHANNEL = "wechat"


@dataclass(frozen=True, slots=True)
class Plan:
    """What every generator needs to build request ``i``: tokens, patients, slots."""

    #: (token, patient id) per account, account ``p`` at index ``p``.
    accounts: list[tuple[str, str]]
    #: Slot ids per department-day.
    slots: list[list[str]]
    #: Idempotency-Key prefix, unique per run (a rerun on the same Redis is no replay).
    key_prefix: str

    def request_parts(self, index: int) -> tuple[str, str, str]:
        """(token, patient id, slot id) of request ``index``."""
        patient = index % len(self.accounts)
        turn = index // len(self.accounts)
        day = self.slots[turn % len(self.slots)]
        token, patient_id = self.accounts[patient]
        return token, patient_id, day[(patient + turn) % len(day)]

    def dump(self, path: Path) -> None:
        """Write the plan as JSON for the Python generator."""
        path.write_text(
            json.dumps(
                {"accounts": self.accounts, "slots": self.slots, "key_prefix": self.key_prefix}
            ),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, path: Path) -> Plan:
        """Read a plan written by :meth:`dump`."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            accounts=[(str(t), str(p)) for t, p in data["accounts"]],
            slots=[[str(s) for s in day] for day in data["slots"]],
            key_prefix=str(data["key_prefix"]),
        )

    def dump_for_wrk(self, path: Path) -> None:
        """Write the plan as the tab-separated lines the wrk script reads."""
        with path.open("w", encoding="utf-8") as out:
            out.write(f"k\t{self.key_prefix}\n")
            for token, patient in self.accounts:
                out.write(f"a\tBearer {token}\t{patient}\n")
            for day in self.slots:
                out.write("s\t" + "\t".join(day) + "\n")


_BODY = b'{"slot_id":"%s","patient_id":"%s","channel":"' + CHANNEL.encode() + b'"}'
_HEAD = (
    b"POST "
    + PATH.encode()
    + b" HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s-%d\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)

#: The same stream as Plan.request_parts, in wrk's LuaJIT.
WRK_SCRIPT = """
local accounts, slots, prefix = {}, {}, ""
local start = 0
-- A global, so that done() can read it from the thread (thread:get): how many request
-- indices the run took. That is more than it answered: the requests still in flight
-- at the end, and (measured with wrk 4.1) one more that wrk builds but never sends.
counter = 0
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do
    local kind = line:sub(1, 1)
    local fields = {}
    for f in line:sub(3):gmatch("[^\\t]+") do fields[#fields + 1] = f end
    if kind == "k" then prefix = fields[1]
    elseif kind == "a" then accounts[#accounts + 1] = fields
    elseif kind == "s" then slots[#slots + 1] = fields end
  end
  start = tonumber(args[2])
end

function request()
  local i = start + counter
  counter = counter + 1
  local p = i % #accounts
  local turn = math.floor(i / #accounts)
  local day = slots[turn % #slots + 1]
  local account = accounts[p + 1]
  local body = '{"slot_id":"' .. day[(p + turn) % #day + 1] .. '","patient_id":"'
    .. account[2] .. '","channel":"@CHANNEL@"}'
  return wrk.format("POST", "@PATH@", {
    ["Authorization"] = account[1],
    ["Idempotency-Key"] = prefix .. "-" .. string.format("%d", i),
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local generated = 0
  for _, thread in ipairs(threads) do
    generated = generated + (thread:get("counter") or 0)
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"generated":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), generated))
end
""".replace("@CHANNEL@", CHANNEL).replace("@PATH@", PATH)


class RequestMaker:
    """Builds request ``i`` of a plan as bytes, the next index each call."""

    def __init__(self, plan: Plan, host: str, start: int) -> None:
        self._host = host.encode()
        self._accounts = [(t.encode(), p.encode()) for t, p in plan.accounts]
        self._slots = [[s.encode() for s in day] for day in plan.slots]
        self._prefix = plan.key_prefix.encode()
        self.next_index = start

    def next(self) -> bytes:
        i = self.next_index
        self.next_index = i + 1
        accounts = self._accounts
        patient = i % len(accounts)
        turn = i // len(accounts)
        day = self._slots[turn % len(self._slots)]
        token, patient_id = accounts[patient]
        body = _BODY % (day[(patient + turn) % len(day)], patient_id)
        return _HEAD % (self._host, token, self._prefix, i, len(body)) + body
