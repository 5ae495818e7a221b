import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Client } from "./api/client";
import { App } from "./App";
import { Cache } from "./state/cache";
import { ServicesProvider } from "./state/services";
import "./styles.css";
import { sameOriginUrl, Socket } from "./ws/socket";

const services = {
  client: new Client(),
  socket: new Socket({ url: sameOriginUrl("/ws") }),
  cache: new Cache(),
};

const root = document.getElementById("root");
if (!root) throw new Error("index.html has no #root");
createRoot(root).render(
  <StrictMode>
    <ServicesProvider services={services}>
      <App />
    </ServicesProvider>
  </StrictMode>,
);
