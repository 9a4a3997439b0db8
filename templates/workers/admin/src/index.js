import { createHandler } from "../../shared/handler.js";

export default createHandler("admin");
