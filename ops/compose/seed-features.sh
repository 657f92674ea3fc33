#!/bin/sh
# The compose stack's online features (runs in the Redis image, for redis-cli): one hash per
# demo card (card-000000 .. card-049999, the generator's cards) with the two features the demo
# model reads and `_ts` now, so they count as fresh for enrich's max_feature_age_s (7 days).
# A real deployment's feature pipeline writes these hashes (README, online features).
set -eu
now="$(date +%s)000"
seq 0 49999 | awk -v now="$now" '{
  printf "HSET verdict:f:card:{card-%06d} chargebacks_90d %d avg_amount_30d %.2f _ts %s\n", $1, ($1 % 53 == 0), 20 + ($1 % 180), now
}' | redis-cli -h "${REDIS_HOST:-redis}" > /dev/null
echo "seeded online features for 50000 cards" >&2
