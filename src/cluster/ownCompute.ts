/**
 * How long a stretch of compute took this device itself, for emulating a slower one (--slowdown
 * X waits (X − 1) times it). Wall time alone would count the time other processes held the cores:
 * eight emulated devices on a 2-core machine would each be slowed by the others' contention too,
 * X times over. So it is the process's CPU time in the stretch, capped by the wall time (with a
 * multi-threaded kernel the CPU time adds up the threads).
 */
export function startOwnCompute(): () => number {
  const wallStarted = performance.now();
  const cpuStarted = process.cpuUsage();
  return () => {
    const cpu = process.cpuUsage(cpuStarted);
    return Math.min(performance.now() - wallStarted, (cpu.user + cpu.system) / 1000);
  };
}
