/** Where a command writes; the CLI passes the process streams, tests pass buffers. */
export interface CommandIo {
  stdout(text: string): void;
  stderr(text: string): void;
}
