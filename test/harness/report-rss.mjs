// Preloaded with --import by tests that measure memory: prints the process's peak RSS at exit.
process.on('exit', () => {
  process.stderr.write(`\nstowage-test-max-rss: ${process.resourceUsage().maxRSS * 1024}\n`);
});
