package org.tsadapt.plugin;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import org.pytorch.serve.servingsdk.http.Response;

/** JSON response helpers (Gson ships inside model-server.jar). */
final class Json {
    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().serializeNulls().create();

    private Json() {}

    static void send(Response rsp, int status, JsonElement body) throws IOException {
        byte[] bytes = (GSON.toJson(body) + "\n").getBytes(StandardCharsets.UTF_8);
        rsp.setStatus(status);
        rsp.setContentType("application/json");
        OutputStream out = rsp.getOutputStream();
        out.write(bytes);
        out.flush();
    }

    /** TorchServe-style error body: {@code {"code":..,"type":..,"message":..}}. */
    static JsonObject error(int code, String type, String message) {
        JsonObject o = new JsonObject();
        o.addProperty("code", code);
        o.addProperty("type", type);
        o.addProperty("message", message);
        return o;
    }
}
