#!/usr/bin/env bash
# shellcheck disable=SC2016 # the self-test passes sed expressions in single quotes
# Offline checks of the Buildroot external tree (make test-buildroot). Fails with one
# line per finding, file:line first:
#
#   symbols  every BR2_ symbol used by configs/*_defconfig, configs/*.fragment, the
#            Config.in and .mk files is listed in br2-symbols.txt, and every listed
#            symbol is used (or defined by our Config.in), so a typo cannot silently
#            drop an option; defconfig lines are well formed, set once, and a symbol
#            is not set in both the common fragment and a board defconfig;
#            BR2_EXTERNAL_<NAME>_PATH names external.desc's name and the paths under
#            it exist; the kernel fragment is well formed.
#   style    Buildroot's coding style basics (the rules of its utils/check-package):
#            Config.in attributes indented by one tab, in order, help text <tab><2
#            spaces> and at most 62 columns; .mk header, variables prefixed by the
#            package name, tabs for indentation, one space before a backslash, the
#            package infrastructure's $(eval ...) last; no trailing whitespace.
#
#   scripts/check-br2-symbols.sh [--tree DIR] [--buildroot BRDIR]
#   scripts/check-br2-symbols.sh --self-test
#
# --tree DIR        the external tree to check (default: buildroot/ of this repository)
# --buildroot BRDIR also require each listed symbol not defined by our tree to be
#                   defined by a Config.in of that Buildroot source, and its host Rust
#                   (package/rust/rust.mk's RUST_VERSION) to be at least the workspace's
#                   rust-version (Cargo.toml) (scripts/image.sh)
# --self-test       copy the tree into a temporary directory, break it in one way at a
#                   time (a typo in a symbol, a bad value, spaces for tabs, ...) and
#                   require each copy to fail with the expected finding
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
tree="$root_dir/buildroot"
brdir=""
self_test=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tree)
            tree="${2:?--tree needs a directory}"
            shift 2
            ;;
        --buildroot)
            brdir="${2:?--buildroot needs a directory}"
            shift 2
            ;;
        --self-test)
            self_test=1
            shift
            ;;
        -h | --help)
            sed -n '3,29s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            echo "check-br2-symbols: unknown argument '$1'" >&2
            exit 2
            ;;
    esac
done
tree="$(cd "$tree" && pwd)"

if [ "$self_test" -eq 1 ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    failures=0
    # mutate NAME FILE SED-EXPRESSION EXPECTED-TEXT: apply the edit to a fresh copy,
    # require the edit to change the file, the check to fail, and its output to name
    # the expected finding.
    mutate() {
        local name="$1" file="$2" expr="$3" expected="$4" out
        rm -rf "$tmp/buildroot"
        cp -a "$tree" "$tmp/buildroot"
        ln -sfn "$(dirname "$tree")/board" "$tmp/board"
        sed -i -e "$expr" "$tmp/buildroot/$file"
        if cmp -s "$tree/$file" "$tmp/buildroot/$file"; then
            echo "self-test: $name: the edit did not change $file" >&2
            failures=$((failures + 1))
            return
        fi
        if out="$("$0" --tree "$tmp/buildroot" 2>&1)"; then
            echo "self-test: $name: the check passed on a broken tree" >&2
            failures=$((failures + 1))
        elif ! grep -qF -- "$expected" <<<"$out"; then
            printf 'self-test: %s: expected "%s", got:\n%s\n' "$name" "$expected" "$out" >&2
            failures=$((failures + 1))
        else
            printf 'self-test: %-34s fails as it should: %s\n' "$name" "$(grep -F -m1 -- "$expected" <<<"$out")"
        fi
    }
    c=configs/gatehouse_common.fragment
    mutate "typo in a symbol" "$c" 's/^BR2_PACKAGE_MOSQUITTO=y/BR2_PACKAGE_MOSQUITO=y/' \
        "BR2_PACKAGE_MOSQUITO is not in br2-symbols.txt"
    mutate "typo drops a listed symbol" "$c" 's/^BR2_PACKAGE_CHRONY=y/BR2_PACKAGE_CHRONNY=y/' \
        "BR2_PACKAGE_CHRONY is listed but used nowhere"
    mutate "typo in an unset symbol" "$c" 's/^# BR2_TARGET_ROOTFS_TAR is not set/# BR2_TARGET_ROOTFS_TARR is not set/' \
        "BR2_TARGET_ROOTFS_TARR is not in br2-symbols.txt"
    mutate "typo in Config.in" package/gatehouse/Config.in 's/select BR2_PACKAGE_HOST_RUSTC$/select BR2_PACKAGE_HOST_RUST/' \
        "BR2_PACKAGE_HOST_RUST is not in br2-symbols.txt"
    mutate "typo in a .mk" package/gatehouse/gatehouse.mk 's/(BR2_ENABLE_DEBUG)/(BR2_ENABLE_DEBGU)/' \
        "BR2_ENABLE_DEBGU is not in br2-symbols.txt"
    mutate "=n instead of is not set" "$c" 's/^BR2_PACKAGE_SQLITE=y/BR2_PACKAGE_SQLITE=n/' \
        "value must be y"
    mutate "set twice" "$c" 's/^BR2_PACKAGE_RAUC=y/&\nBR2_PACKAGE_RAUC=y/' \
        "BR2_PACKAGE_RAUC set twice"
    mutate "common and board both set" configs/gatehouse_qemu_aarch64_defconfig '$a BR2_PACKAGE_DROPBEAR=y' \
        "BR2_PACKAGE_DROPBEAR is also set in"
    mutate "external name typo" "$c" 's/BR2_EXTERNAL_GATEHOUSE_PATH)\/linux/BR2_EXTERNAL_GATEHOSE_PATH)\/linux/' \
        "does not match external.desc"
    mutate "path that does not exist" "$c" 's/board\/common\/post-build.sh/board\/common\/postbuild.sh/' \
        "postbuild.sh does not exist"
    mutate "list entry that is not BR2_" br2-symbols.txt 's/^BR2_PACKAGE_SQLITE$/PACKAGE_SQLITE/' \
        "is not a BR2_ symbol"
    mutate "kernel fragment syntax" linux/gatehouse.fragment 's/^CONFIG_TUN=y/CONFIG_TUN = y/' \
        "not a kernel config line"
    mutate "Config.in spaces for a tab" package/gatehouse/Config.in 's/^\tbool "gatehouse"/        bool "gatehouse"/' \
        "indented with spaces"
    mutate "Config.in attribute order" package/gatehouse/Config.in '/^\tbool "gatehouse"/d; s/^\tselect BR2_PACKAGE_HOST_RUSTC$/&\n\tbool "gatehouse"/' \
        "out of order"
    mutate "Config.in long help line" package/gatehouse/Config.in 's/^\t  The Gatehouse gateway binary.*/& and much more text to overflow/' \
        "help text over 62 columns"
    mutate ".mk variable not prefixed" package/gatehouse/gatehouse.mk 's/^GATEHOUSE_LICENSE = /GATEHOSE_LICENSE = /' \
        "GATEHOSE_LICENSE: variables of package gatehouse start with GATEHOUSE_"
    mutate ".mk spaces for a tab" package/gatehouse/gatehouse.mk 's/^\t\$(INSTALL) -D -m 0755/    $(INSTALL) -D -m 0755/' \
        "indented with spaces"
    mutate ".mk two spaces before backslash" package/gatehouse/gatehouse.mk 's/^GATEHOUSE_CARGO_BUILD_OPTS = \\$/GATEHOUSE_CARGO_BUILD_OPTS =  \\/' \
        "one space before a line-ending backslash"
    mutate ".mk header" package/gatehouse/gatehouse.mk '3s/.*/# gatehose/' \
        "header must be"
    mutate "trailing whitespace" configs/gatehouse_rpi4_64_defconfig 's/^BR2_aarch64=y$/BR2_aarch64=y /' \
        "trailing whitespace"
    # --buildroot against a fake Buildroot source tree that defines every listed symbol
    # (our own Config.in defines BR2_PACKAGE_GATEHOUSE) and builds a given Rust.
    # against NAME RUST DROP EXPECTED: DROP is a symbol the fake tree leaves out ("" for
    # none); EXPECTED "" means the check must pass.
    against() {
        local name="$1" rust="$2" drop="$3" expected="$4" out rc=0
        rm -rf "$tmp/br"
        mkdir -p "$tmp/br/package/rust"
        grep -E '^BR2_' "$tree/br2-symbols.txt" | grep -vx -e BR2_PACKAGE_GATEHOUSE -e "${drop:-^$}" |
            sed 's/^/config /' >"$tmp/br/Config.in"
        printf 'RUST_VERSION = %s\n' "$rust" >"$tmp/br/package/rust/rust.mk"
        out="$("$0" --tree "$tree" --buildroot "$tmp/br" 2>&1)" || rc=$?
        if [ -z "$expected" ] && [ "$rc" -ne 0 ]; then
            printf 'self-test: %s: the check failed on a good tree:\n%s\n' "$name" "$out" >&2
            failures=$((failures + 1))
        elif [ -n "$expected" ] && [ "$rc" -eq 0 ]; then
            echo "self-test: $name: the check passed on a broken tree" >&2
            failures=$((failures + 1))
        elif [ -n "$expected" ] && ! grep -qF -- "$expected" <<<"$out"; then
            printf 'self-test: %s: expected "%s", got:\n%s\n' "$name" "$expected" "$out" >&2
            failures=$((failures + 1))
        else
            printf 'self-test: %-34s %s\n' "$name" "${expected:+fails as it should: }$(grep -F -m1 -- "${expected:-host Rust is}" <<<"$out")"
        fi
    }
    against "Buildroot with all, Rust 1.96.1" 1.96.1 "" ""
    against "Buildroot lacking a symbol" 1.96.1 BR2_PACKAGE_RAUC \
        "BR2_PACKAGE_RAUC is not defined by Buildroot"
    against "Buildroot with an old Rust" 1.84.1 "" "older than the workspace's rust-version"
    rm -rf "$tmp"
    trap - EXIT
    if [ "$failures" -gt 0 ]; then
        echo "check-br2-symbols: self-test: $failures mutation(s) not caught" >&2
        exit 1
    fi
    echo "check-br2-symbols: self-test: ok (every mutation caught)"
    exit 0
fi

findings=0
tab=$'\t'
fail() {
    printf '%s\n' "$*" >&2
    findings=$((findings + 1))
}

list="$tree/br2-symbols.txt"
[ -f "$list" ] || {
    echo "check-br2-symbols: $list is missing" >&2
    exit 1
}
[ -f "$tree/external.desc" ] || {
    echo "check-br2-symbols: $tree/external.desc is missing" >&2
    exit 1
}

# --- external.desc --------------------------------------------------------------------
ext_name="$(sed -n 's/^name: *//p' "$tree/external.desc")"
if ! [[ "$ext_name" =~ ^[A-Za-z0-9_]+$ ]]; then
    fail "external.desc:1: name '$ext_name' must be [A-Za-z0-9_]+"
fi
ext_var="BR2_EXTERNAL_${ext_name}_PATH"

mapfile -t defconfigs < <(find "$tree/configs" -maxdepth 1 -type f \( -name '*_defconfig' -o -name '*.fragment' \) | sort)
mapfile -t config_ins < <(find "$tree" -type f -name 'Config.in*' | sort)
mapfile -t mks < <(find "$tree" -type f -name '*.mk' | sort)
mapfile -t kernel_fragments < <(find "$tree/linux" "$tree/uboot" -maxdepth 1 -type f -name '*.fragment' 2>/dev/null | sort)
[ "${#defconfigs[@]}" -gt 0 ] || fail "configs/: no *_defconfig or *.fragment"

# --- the list -------------------------------------------------------------------------
declare -A listed=() used=() defined=()
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
    lineno=$((lineno + 1))
    entry="${line%%#*}"
    entry="${entry//[[:space:]]/}"
    [ -n "$entry" ] || continue
    if ! [[ "$entry" =~ ^BR2_[A-Za-z0-9_]+$ ]]; then
        fail "br2-symbols.txt:$lineno: '$entry' is not a BR2_ symbol"
    elif [ -n "${listed[$entry]:-}" ]; then
        fail "br2-symbols.txt:$lineno: $entry listed twice (first at line ${listed[$entry]})"
    else
        listed[$entry]=$lineno
    fi
done <"$list"

# A use of a symbol: remember where, for the messages.
use() { # symbol where
    local sym="$1" where="$2"
    case "$sym" in
        BR2_EXTERNAL_*_PATH)
            [ "$sym" = "$ext_var" ] ||
                fail "$where: $sym does not match external.desc's name (expected $ext_var)"
            return
            ;;
    esac
    [ -n "${used[$sym]:-}" ] || used[$sym]="$where"
}

# Paths under $(BR2_EXTERNAL_<NAME>_PATH) must exist (overlay, scripts, fragments).
check_paths() { # value where
    local value="$1" where="$2" p path
    for p in $value; do
        case "$p" in
            "\$($ext_var)"* | "\$$ext_var"*)
                path="${p#"\$($ext_var)"}"
                path="${path#"\$$ext_var"}"
                path="$tree$path"
                [ -e "$path" ] || fail "$where: $p does not exist ($(realpath -m "$path"))"
                ;;
        esac
    done
}

# --- defconfigs and fragments ---------------------------------------------------------
declare -A set_in_common=()
for f in "${defconfigs[@]}"; do
    rf="${f#"$tree"/}"
    is_common=0
    [[ "$f" != */gatehouse_common.fragment ]] || is_common=1
    declare -A seen=()
    lineno=0
    while IFS= read -r line || [ -n "$line" ]; do
        lineno=$((lineno + 1))
        where="$rf:$lineno"
        sym=""
        if [[ "$line" =~ ^(BR2_[A-Za-z0-9_]+)=(.*)$ ]]; then
            sym="${BASH_REMATCH[1]}"
            value="${BASH_REMATCH[2]}"
            raw="$value"
            if ! [[ "$value" =~ ^(y|m|\"([^\"\\]|\\.)*\"|-?[0-9]+|0x[0-9a-fA-F]+)$ ]]; then
                fail "$where: $sym=$value: value must be y, \"string\" or a number (use '# $sym is not set' to unset)"
            fi
            while [[ "$value" =~ \$\((BR2_[A-Za-z0-9_]+)\) ]]; do
                use "${BASH_REMATCH[1]}" "$where"
                value="${value/"${BASH_REMATCH[0]}"/}"
            done
            raw="${raw#\"}"
            check_paths "${raw%\"}" "$where"
        elif [[ "$line" =~ ^#\ (BR2_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            sym="${BASH_REMATCH[1]}"
        elif [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]]; then
            continue
        else
            fail "$where: not a defconfig line: $line"
            continue
        fi
        use "$sym" "$where"
        if [ -n "${seen[$sym]:-}" ]; then
            fail "$where: $sym set twice in this file (first at line ${seen[$sym]})"
        fi
        seen[$sym]=$lineno
        [ "$is_common" -eq 0 ] || set_in_common[$sym]="$where"
    done <"$f"
    unset seen
done
# A symbol belongs to the common fragment or to a board, not both: with both, the
# board's value wins the merge silently and the fragment lies about every board.
for f in "${defconfigs[@]}"; do
    rf="${f#"$tree"/}"
    case "$f" in */gatehouse_common.fragment) continue ;; esac
    while IFS=: read -r n sym; do
        if [ -n "${set_in_common[$sym]:-}" ]; then
            fail "$rf:$n: $sym is also set in ${set_in_common[$sym]} (set it in one place)"
        fi
    done < <(grep -noE '^(# )?BR2_[A-Za-z0-9_]+' "$f" | sed 's/# //')
done

# --- Config.in ------------------------------------------------------------------------
# Symbols outside help texts and comments; `config`/`menuconfig` define.
for f in "${config_ins[@]}"; do
    rf="${f#"$tree"/}"
    while IFS=$'\t' read -r n kind sym; do
        where="$rf:$n"
        if [ "$kind" = def ]; then
            defined[$sym]="$where"
        fi
        use "$sym" "$where"
    done < <(awk '
        /^\thelp[ \t]*$/ { inhelp = 1; next }
        inhelp && (/^\t  / || /^[ \t]*$/) { next }
        { inhelp = 0 }
        {
            line = $0
            sub(/#.*/, "", line)
            if (match(line, /^(menu)?config[ \t]+BR2_[A-Za-z0-9_]+/)) {
                s = substr(line, RSTART, RLENGTH); sub(/^(menu)?config[ \t]+/, "", s)
                print NR "\tdef\t" s
                line = substr(line, RSTART + RLENGTH)
            }
            while (match(line, /BR2_[A-Za-z0-9_]+/)) {
                print NR "\tuse\t" substr(line, RSTART, RLENGTH)
                line = substr(line, RSTART + RLENGTH)
            }
        }' "$f")
done

# `source` lines: the sourced file must exist.
for f in "${config_ins[@]}"; do
    rf="${f#"$tree"/}"
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        if [[ "$line" =~ ^source\ \"(.*)\"$ ]]; then
            check_paths "${BASH_REMATCH[1]}" "$rf:$n"
        fi
    done <"$f"
done

# --- .mk files ------------------------------------------------------------------------
for f in "${mks[@]}"; do
    rf="${f#"$tree"/}"
    while IFS=: read -r n sym; do
        use "$sym" "$rf:$n"
    done < <(awk '!/^[ \t]*#/ { line = $0
        while (match(line, /BR2_[A-Za-z0-9_]+/)) {
            print NR ":" substr(line, RSTART, RLENGTH); line = substr(line, RSTART + RLENGTH) } }' "$f")
done

# --- list against uses ----------------------------------------------------------------
for sym in "${!used[@]}"; do
    [ -n "${listed[$sym]:-}" ] ||
        fail "${used[$sym]}: $sym is not in br2-symbols.txt (typo? if it is real, add it to the list)"
done
for sym in "${!listed[@]}"; do
    [ -n "${used[$sym]:-}" ] || [ -n "${defined[$sym]:-}" ] ||
        fail "br2-symbols.txt:${listed[$sym]}: $sym is listed but used nowhere (stale entry or a typo in a file)"
done

# Each package directory: a .mk, and a Config.in defining BR2_PACKAGE_<NAME> that the
# tree's top Config.in sources.
for d in "$tree"/package/*/; do
    pkg="$(basename "$d")"
    upper="$(tr 'a-z-' 'A-Z_' <<<"$pkg")"
    [ -f "$d/$pkg.mk" ] || fail "package/$pkg: $pkg.mk is missing"
    [ -n "${defined[BR2_PACKAGE_$upper]:-}" ] || fail "package/$pkg/Config.in: does not define BR2_PACKAGE_$upper"
    grep -qF "\"\$$ext_var/package/$pkg/Config.in\"" "$tree/Config.in" ||
        fail "Config.in: does not source \$$ext_var/package/$pkg/Config.in"
done

# --- against a Buildroot source tree ----------------------------------------------------
if [ -n "$brdir" ]; then
    [ -d "$brdir/package" ] || {
        echo "check-br2-symbols: $brdir is not a Buildroot source tree" >&2
        exit 1
    }
    br_defined="$(find "$brdir" -name 'Config.in*' -not -path '*/output/*' -exec \
        sed -n 's/^[[:space:]]*\(menu\)\{0,1\}config[[:space:]]\{1,\}\(BR2_[A-Za-z0-9_]*\).*/\2/p' {} + | sort -u)"
    for sym in "${!listed[@]}"; do
        [ -n "${defined[$sym]:-}" ] && continue
        grep -qx -- "$sym" <<<"$br_defined" ||
            fail "br2-symbols.txt:${listed[$sym]}: $sym is not defined by Buildroot in $brdir"
    done
    # Its host Rust must build the workspace.
    br_rust="$(sed -n 's/^RUST_VERSION[[:space:]]*=[[:space:]]*\([0-9][0-9.]*\)[[:space:]]*$/\1/p' \
        "$brdir/package/rust/rust.mk" 2>/dev/null | head -n 1)"
    need_rust="$(sed -n 's/^rust-version[[:space:]]*=[[:space:]]*"\(.*\)"/\1/p' "$root_dir/Cargo.toml" | head -n 1)"
    if [ -z "$br_rust" ]; then
        fail "$brdir/package/rust/rust.mk: no RUST_VERSION: cannot tell which Rust this Buildroot builds"
    elif [ "$(printf '%s\n%s\n' "$br_rust" "$need_rust" | sort -V | head -n 1)" != "$need_rust" ]; then
        fail "$brdir/package/rust/rust.mk: Rust $br_rust is older than the workspace's rust-version $need_rust (Cargo.toml); pick a newer Buildroot in scripts/image.sh"
    else
        echo "check-br2-symbols: Buildroot's host Rust is $br_rust (the workspace needs $need_rust or newer)"
    fi
fi

# --- kernel and U-Boot fragments -----------------------------------------------------------------
for f in "${kernel_fragments[@]}"; do
    rf="${f#"$tree"/}"
    declare -A kseen=()
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        where="$rf:$n"
        if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(y|m|\"[^\"]*\"|-?[0-9]+|0x[0-9a-fA-F]+)$ ]] ||
            [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            sym="${BASH_REMATCH[1]}"
            [ -z "${kseen[$sym]:-}" ] || fail "$where: $sym set twice (first at line ${kseen[$sym]})"
            kseen[$sym]=$n
        elif ! [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]]; then
            fail "$where: not a kernel config line: $line"
        fi
    done <"$f"
    unset kseen
done

# --- style: whitespace ----------------------------------------------------------------
while IFS= read -r -d '' f; do
    rf="${f#"$tree"/}"
    while IFS=: read -r n _; do
        fail "$rf:$n: trailing whitespace"
    done < <(grep -nE '[[:space:]]$' "$f" || true)
    [ ! -s "$f" ] || [ -z "$(tail -c 1 "$f")" ] || fail "$rf: no newline at end of file"
done < <(find "$tree" -type f \( -name 'Config.in*' -o -name '*.mk' -o -name '*_defconfig' \
    -o -name '*.fragment' -o -name '*.desc' -o -name '*.txt' \) -print0)

# --- style: Config.in -----------------------------------------------------------------
attr_rank() {
    case "$1" in
        bool | tristate | string | int | hex | prompt) echo 0 ;;
        default | def_bool | def_tristate) echo 1 ;;
        depends) echo 2 ;;
        select | imply) echo 3 ;;
        help) echo 4 ;;
        *) echo -1 ;;
    esac
}
for f in "${config_ins[@]}"; do
    rf="${f#"$tree"/}"
    n=0
    inentry=0
    inhelp=0
    rank=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        where="$rf:$n"
        if [ "$inhelp" -eq 1 ]; then
            if [ -z "$line" ]; then continue; fi
            if [[ "$line" == $'\t  '* ]]; then
                text="${line#$'\t  '}"
                if [ "${#text}" -gt 62 ] && ! [[ "$text" =~ ^https?:// ]]; then
                    fail "$where: help text over 62 columns after <tab><2 spaces> (${#text})"
                fi
                continue
            fi
            inhelp=0
        fi
        case "$line" in
            '' | '#'*) continue ;;
            config\ * | menuconfig\ * | comment\ * | choice | menu\ *)
                inentry=1
                rank=0
                continue
                ;;
            endmenu | endchoice | endif | if\ * | source\ *)
                inentry=0
                continue
                ;;
            ' '*)
                fail "$where: indented with spaces (Buildroot uses one tab)"
                continue
                ;;
            $'\t\t'* | $'\t '*)
                fail "$where: attribute indented with more than one tab (help text is <tab><2 spaces>)"
                continue
                ;;
            $'\t'*)
                [ "$inentry" -eq 1 ] || fail "$where: attribute outside of a config/comment/menu entry"
                word="${line#$'\t'}"
                word="${word%%[[:space:]]*}"
                r="$(attr_rank "$word")"
                if [ "$r" -lt 0 ]; then
                    fail "$where: unknown attribute '$word'"
                elif [ "$r" -lt "$rank" ]; then
                    fail "$where: '$word' out of order (bool/prompt, default, depends on, select, help)"
                else
                    rank="$r"
                fi
                [ "$word" != help ] || inhelp=1
                ;;
            *)
                fail "$where: unexpected line: $line"
                ;;
        esac
    done <"$f"
done

# --- style: package .mk files ---------------------------------------------------------
hashes="$(printf '#%.0s' $(seq 80))"
for f in "$tree"/package/*/*.mk; do
    rf="${f#"$tree"/}"
    [ -e "$f" ] || continue
    pkg="$(basename "$f" .mk)"
    upper="$(tr 'a-z-' 'A-Z_' <<<"$pkg")"
    r="$rf"
    expected="$(printf '%s\n#\n# %s\n#\n%s\n' "$hashes" "$pkg" "$hashes")"
    [ "$(head -n 5 "$f")" = "$expected" ] ||
        fail "$r:1: header must be 80 '#', '#', '# $pkg', '#', 80 '#'"
    [ -z "$(sed -n 6p "$f")" ] || fail "$r:6: a blank line must follow the header"
    last="$(grep -v '^[[:space:]]*$' "$f" | tail -n 1)"
    [[ "$last" =~ ^\$\(eval\ \$\((host-)?[a-z0-9-]*package\)\)$ ]] ||
        fail "$r: the last line must be the infrastructure's \$(eval \$(...-package)), not '$last'"
    n=0
    indefine=0
    prev_continues=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        continues=0
        [[ "$line" != *\\ ]] || continues=1
        if [[ "$line" =~ ^define\ ([A-Za-z0-9_]+)$ ]]; then
            [[ "${BASH_REMATCH[1]}" == "${upper}_"* ]] ||
                fail "$r:$n: ${BASH_REMATCH[1]}: variables of package $pkg start with ${upper}_"
            indefine=1
        elif [ "$line" = endef ]; then
            indefine=0
        elif [ "$indefine" -eq 0 ] && [ "$prev_continues" -eq 0 ] &&
            [[ "$line" =~ ^([A-Za-z0-9_]+)[[:space:]]*(\+=|:=|\?=|=) ]]; then
            [[ "${BASH_REMATCH[1]}" == "${upper}_"* ]] ||
                fail "$r:$n: ${BASH_REMATCH[1]}: variables of package $pkg start with ${upper}_"
        fi
        if [[ "$line" =~ ^\ +[^[:space:]] ]]; then
            fail "$r:$n: indented with spaces (use tabs)"
        fi
        if [ "$indefine" -eq 1 ] && [[ "$line" =~ ^[^${tab}d] ]] && [ "$line" != endef ]; then
            fail "$r:$n: commands in a define block start with a tab"
        fi
        if [ "$continues" -eq 1 ] && ! [[ "$line" =~ [^[:space:]]\ \\$ || "$line" =~ ^[[:space:]]*\\$ ]]; then
            fail "$r:$n: use exactly one space before a line-ending backslash"
        fi
        prev_continues="$continues"
    done <"$f"
done

if [ "$findings" -gt 0 ]; then
    echo "check-br2-symbols: $findings finding(s) in $tree" >&2
    exit 1
fi
echo "check-br2-symbols: ok (${#listed[@]} symbols listed and used, ${#defconfigs[@]} defconfig files, ${#config_ins[@]} Config.in, ${#mks[@]} .mk, ${#kernel_fragments[@]} kernel/U-Boot fragment(s))"
