// A component under test in jsdom, reached the way a person reaches it: by its label, a
// button's text or a test id. `mountScreen()` registers each test's fresh root and its
// removal; call it once at the top of a test file.
import { act, type ReactNode } from "react";
import { createRoot, type Root } from "react-dom/client";
import { afterEach, beforeEach } from "vitest";

(globalThis as { IS_REACT_ACT_ENVIRONMENT?: boolean }).IS_REACT_ACT_ENVIRONMENT = true;

export interface Screen {
  readonly container: HTMLDivElement;
  render(node: ReactNode): void;
  field(label: string): HTMLInputElement | HTMLSelectElement;
  button(name: string): HTMLButtonElement;
  testId(id: string): Element | null;
  /** Types like a person: React sees the input event, then focus leaves the field. */
  type(label: string, text: string): void;
  choose(label: string, value: string): void;
}

export function mountScreen(): Screen {
  let container: HTMLDivElement;
  let root: Root;
  beforeEach(() => {
    container = document.createElement("div");
    document.body.append(container);
    root = createRoot(container);
  });
  afterEach(() => {
    act(() => root.unmount());
    container.remove();
  });
  const field = (label: string) => {
    const found = [...container.querySelectorAll("label")].find((l) => l.textContent === label);
    const target = found && document.getElementById(found.htmlFor);
    if (!target) throw new Error(`no field labelled ${label}`);
    return target as HTMLInputElement | HTMLSelectElement;
  };
  return {
    get container() {
      return container;
    },
    render: (node) => act(() => root.render(node)),
    field,
    button(name) {
      const found = [...container.querySelectorAll("button")].find((b) => b.textContent === name);
      if (!found) throw new Error(`no button ${name}`);
      return found;
    },
    testId: (id) => container.querySelector(`[data-testid="${id}"]`),
    type(label, text) {
      const input = field(label) as HTMLInputElement;
      act(() => {
        const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value")!.set!;
        setter.call(input, text);
        input.dispatchEvent(new Event("input", { bubbles: true }));
      });
      act(() => {
        input.dispatchEvent(new FocusEvent("focusout", { bubbles: true }));
      });
    },
    choose(label, value) {
      const select = field(label) as HTMLSelectElement;
      act(() => {
        select.value = value;
        select.dispatchEvent(new Event("change", { bubbles: true }));
      });
    },
  };
}
