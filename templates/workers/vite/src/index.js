import { createHandler } from "../../shared/handler.js";

export default createHandler("web");
