// One AI-assistance switch for the browser session, honoured by the worklist, the study page and the reading
// room. It lives in a session cookie (no expiry: gone when the browser closes), which every tab shares and the
// server reads when it renders a page (body.assist-off from the first paint, no flash of AI labels); the other
// open tabs follow a change at once (BroadcastChannel) or, failing that, when they get the focus again.

const COOKIE = "lumen_assist";
const LEGACY_KEY = "lumen.assist"; // the per-tab sessionStorage key of earlier versions
const channel = "BroadcastChannel" in window ? new BroadcastChannel(COOKIE) : null;

function cookieValue() {
  const found = document.cookie.split("; ").find((part) => part.startsWith(`${COOKIE}=`));
  return found ? found.slice(COOKIE.length + 1) : null;
}

/** Whether AI assistance is shown in this browser session (on unless switched off). */
export function assistanceOn() {
  const value = cookieValue() ?? sessionStorage.getItem(LEGACY_KEY);
  return value !== "off";
}

/** Switch AI assistance on or off for every page and tab of this browser session. */
export function setAssistanceOn(on) {
  const secure = window.location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${COOKIE}=${on ? "on" : "off"}; Path=/; SameSite=Strict${secure}`;
  sessionStorage.removeItem(LEGACY_KEY);
  channel?.postMessage(on);
}

/** Call `apply(on)` with the session's switch when another tab may have changed it: at once (BroadcastChannel),
 * and whenever this tab is shown or focused again. `apply` gets the current value and does nothing if unchanged. */
export function followAssistance(apply) {
  const check = () => apply(assistanceOn());
  // The message carries the value: the other tab's cookie write may not have reached this renderer yet.
  channel?.addEventListener("message", (event) => apply(event.data === true));
  window.addEventListener("focus", check);
  window.addEventListener("pageshow", check);
  document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && check());
}
