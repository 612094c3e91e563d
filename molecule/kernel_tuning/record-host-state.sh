#!/bin/sh
# Records the CI host's kernel values that the privileged test container changes (its
# systemd raises fs.file-max at boot; the role sets vm.*, THP and read-ahead). cleanup.yml
# restores them and removes the record. An existing record is kept: after an aborted run it
# still holds the values from before the first one.
set -eu
state=/var/tmp/sdapi-molecule-kernel-tuning.state
[ -e "$state" ] && exit 0
{
for key in fs.file-max fs.nr_open vm.swappiness vm.dirty_background_ratio vm.dirty_ratio \
           vm.max_map_count vm.overcommit_memory net.core.somaxconn \
           net.ipv4.tcp_congestion_control net.ipv4.tcp_slow_start_after_idle \
           net.ipv4.tcp_fin_timeout net.core.default_qdisc; do
    f=/proc/sys/$(echo "$key" | tr . /)
    printf '%s\t%s\n' "$f" "$(cat "$f")"
done
f=/sys/kernel/mm/transparent_hugepage/enabled
printf '%s\t%s\n' "$f" "$(sed -n 's/.*\[\([a-z]*\)\].*/\1/p' "$f")"
for f in /sys/block/*/queue/read_ahead_kb; do
    printf '%s\t%s\n' "$f" "$(cat "$f")"
done
} > "$state.tmp"
mv "$state.tmp" "$state"
