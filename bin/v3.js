#!/usr/bin/env node
// Runs the built CLI; `npm ci` builds dist/ through the prepare script.
import '../dist/src/cli/main.js'
