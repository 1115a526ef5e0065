#!/usr/bin/env node
/**
 * The `apns-worker` executable (package.json `bin`). The commands live in src/cli/.
 */
import { main } from './cli/main.js';

process.exitCode = await main(process.argv.slice(2));
