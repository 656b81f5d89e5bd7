-- Key layout (prepended to each script; PER: keys per scope, 1, or 2 with the lease holders).
-- KEYS  the scopes' hashes K[1..N], then (PER 2) their holder sets H[1..N]. Every name has its
--       tenant as a hash tag, so one call's keys share a Redis Cluster slot.
local N = #KEYS / PER
local K, H = {}, {}
for i = 1, N do
  K[i] = KEYS[i]
  if PER == 2 then H[i] = KEYS[N + i] end
end
