#!/usr/bin/env node
// Entry point of the ka-proxy command.
import { main } from './cli.ts'

void main()
