/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The gateway serves dist/ at `/`, with the API under /v1 and the socket at /ws on the same
// origin. `npm run dev` proxies both to `make up`'s gateway (EXCHANGE_GATEWAY overrides).
const gateway = process.env.EXCHANGE_GATEWAY ?? "http://127.0.0.1:8081";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    sourcemap: false,
    target: "es2022",
  },
  server: {
    proxy: {
      "/v1": { target: gateway, changeOrigin: true },
      "/ws": { target: gateway, ws: true, changeOrigin: true },
    },
  },
  test: {
    environment: "node", // component tests opt into jsdom per file
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
