#!/bin/sh
# The compose stack's event feed (runs in the Kafka image, for its console producer).
# Sends /feed/events.jsonl (written once by the generator service) to the `events` topic at
# FEED_RATE events/s, keyed by card_id: partition-owned windows need every event of a card on
# one partition. It loops for ever; each pass moves event times and ids past the previous
# pass, so windows keep moving forward instead of counting the replay as late events.
set -eu
file=/feed/events.jsonl
rate="${FEED_RATE:-500}"
field() { sed -E 's/.*"event_time":([0-9]+).*/\1/'; }
first=$(head -n 1 "$file" | field)
last=$(tail -n 1 "$file" | field)
span=$((last - first + 1000))
echo "feeding $(wc -l < "$file") events per pass at $rate/s, passes $span ms of event time apart" >&2
tab=$(printf '\t')
pass=0
while :; do
  awk -v pass="$pass" -v span="$span" -v rate="$rate" '{
    match($0, /"event_time":[0-9]+/)
    t = substr($0, RSTART + 13, RLENGTH - 13) + pass * span
    line = substr($0, 1, RSTART - 1) "\"event_time\":" sprintf("%.0f", t) substr($0, RSTART + RLENGTH)
    sub(/"event_id":"/, "\"event_id\":\"p" pass "-", line)
    match(line, /"card_id":"[^"]*"/)
    print substr(line, RSTART + 11, RLENGTH - 12) "\t" line
    if (NR % rate == 0) { fflush(); system("sleep 1") }
  }' "$file"
  pass=$((pass + 1))
done | /opt/kafka/bin/kafka-console-producer.sh --bootstrap-server kafka:9092 --topic events \
  --property parse.key=true --property "key.separator=$tab"
