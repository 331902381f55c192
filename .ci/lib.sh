# Helpers sourced by .ci/run and the steps in .ci/steps.

# install_missing COMMAND:PACKAGE...
# Installs (apt-get, Debian) each PACKAGE whose COMMAND is not on the PATH; an
# entry dpkg:PACKAGE checks for the package itself (libraries, certificates).
install_missing() {
    local need=() entry cmd pkg
    for entry in "$@"; do
        cmd=${entry%%:*}
        pkg=${entry#*:}
        if [ "$cmd" = dpkg ]; then
            dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
        else
            command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
        fi
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "== installing: ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
}
