// Command-line options of the e2e scripts: --name value or --name=value;
// the names in flags take no value (they are "true" when given).
export function args(argv, flags = []) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    if (flags.includes(a.slice(2))) {
      out[a.slice(2)] = "true";
      continue;
    }
    const [k, v] = a.includes("=") ? a.slice(2).split(/=(.*)/s) : [a.slice(2), argv[++i]];
    if (v === undefined) throw new Error(`${a} needs a value`);
    out[k] = v;
  }
  return out;
}
