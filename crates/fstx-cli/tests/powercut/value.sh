# Value N of the power-cut workloads: "value N " and a run of dots whose
# length depends on N (up to 2900 bytes: one to seven 512-byte sectors).
value() {
    printf 'value %d ' "$1"
    head -c $(( ($1 * 331) % 2900 )) /dev/zero | tr '\0' '.'
}
