# Init container of a job pod: make the pipes, then wait for the uploaded config.
#
# Parameters come from the environment, never from text substituted into this script:
#   PIPES_DIR        where the FIFOs are made (stdout, stderr, and stdin when USES_STDIN=true)
#   CONFIG_DIR       where the job's files are uploaded
#   SUCCESS_FILE     the file uploaded last, whose presence means the upload is complete
#   USES_STDIN       "true" to make the stdin FIFO too
#   TIMEOUT_SECONDS  how long to wait while nothing new arrives in CONFIG_DIR
#
# The timeout counts only while the disk usage of CONFIG_DIR is not growing: a slow upload
# that keeps writing is never cut off, a stuck one is (as Airbyte's init.sh).
set -u

for pipe in stdout stderr; do
  [ -p "$PIPES_DIR/$pipe" ] || mkfifo "$PIPES_DIR/$pipe" || exit 1
  chmod 666 "$PIPES_DIR/$pipe"
done
if [ "$USES_STDIN" = true ]; then
  [ -p "$PIPES_DIR/stdin" ] || mkfifo "$PIPES_DIR/stdin" || exit 1
  chmod 666 "$PIPES_DIR/stdin"
fi

SLEEP_PERIOD=0.1
ITERATION=0
MAX_ITERATION=$((TIMEOUT_SECONDS * 10))
DISK_USAGE=$(du -s "$CONFIG_DIR" | awk '{print $1;}')

until [ -f "$CONFIG_DIR/$SUCCESS_FILE" ] || [ "$ITERATION" -ge "$MAX_ITERATION" ]; do
  ITERATION=$((ITERATION + 1))
  LAST_DISK_USAGE=$DISK_USAGE
  DISK_USAGE=$(du -s "$CONFIG_DIR" | awk '{print $1;}')
  if [ "$DISK_USAGE" -gt "$LAST_DISK_USAGE" ]; then
    ITERATION=0
  fi
  sleep "$SLEEP_PERIOD"
done

if [ -f "$CONFIG_DIR/$SUCCESS_FILE" ]; then
  echo "All files copied successfully, exiting with code 0..."
  exit 0
fi
echo "Timeout after ${TIMEOUT_SECONDS}s without new files in $CONFIG_DIR, exiting with code 1..."
exit 1
